"""User-facing errors: the CLI prints these as one line, without a traceback."""


class MaskclsError(Exception):
    """A problem with the user's input (data, config, arguments).

    The message names the file or setting, what is wrong and what to do.
    """
