"""Writing files that matter: whole or not at all.

Every checkpoint, config, metrics table, recipe and submission goes through `atomic_write`:
the bytes land in a temporary file beside the target, are flushed to disk, and only then
replace it, so a crash, a kill or a full disk leaves the previous file, never half of one.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import MaskclsError

CACHE_ENV = "MASKCLS_CACHE"


def cache_dir() -> Path:
    """Where maskcls keeps what it can make again (face detections, tuned detectors); `MASKCLS_CACHE` moves it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "maskcls")


def refuse_filled_folder(out, force: bool) -> None:
    """An output folder that already holds files is kept unless `force`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise MaskclsError(f"{out}: exists and is not empty; pass --force to replace it, or choose another --out")


def refuse_replacing_inputs(out, inputs, what: str, result: str) -> None:
    """An `out` that is, or holds, one of `inputs` (each `what`) is refused: replacing it
    (--force) would delete what the command reads to write its `result`."""
    out = Path(out).resolve()
    for path in inputs:
        path = Path(path).resolve()
        if path == out or out in path.parents:
            raise MaskclsError(f"{out}: holds {path}, {what}; write the {result} elsewhere (--out)")


@contextmanager
def folder_written_whole(out):
    """A staging folder beside `out` to write into. When the block ends it replaces `out`; when
    it fails it is removed. So `out` holds the whole result or what it held before, and a
    rerun starts clean of an interrupted one."""
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


@contextmanager
def atomic_write(path, mode: str = "w", what: str = "file"):
    """Open a temporary file for writing; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {what} is intact" if path.exists() else f"no earlier {what} exists"
        if exc.errno == errno.ENOSPC:
            raise MaskclsError(f"disk full at {path}; {kept}. Free space and run the command again") from None
        raise MaskclsError(f"{path}: could not write the {what} ({exc.strerror or exc}); {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str, what: str = "file") -> None:
    with atomic_write(path, "w", what) as handle:
        handle.write(text)
