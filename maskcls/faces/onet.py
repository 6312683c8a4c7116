"""Tuned O-net weights: kept by content, and carried by the runs and models that use them.

A detector's settings name their O-net by digest (the SHA-256 of its weights file, 16 hex
digits); None is facenet-pytorch's packaged network. The weights live in a store,
cache_dir()/detectors/onet-<digest>.safetensors. Run folders and exported model folders carry a
copy under the same name, so they can move to another machine: loading one adopts its copy into
the store, its digest checked first.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import MaskclsError
from ..fileio import atomic_write, cache_dir


def store_dir() -> Path:
    return cache_dir() / "detectors"


def weights_name(digest: str) -> str:
    return f"onet-{digest}.safetensors"


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


def save_onet(state: dict) -> str:
    """Store an O-net state dict; returns its digest."""
    from safetensors.torch import save

    blob = save({name: tensor.contiguous() for name, tensor in state.items()})
    digest = _digest(blob)
    path = store_dir() / weights_name(digest)
    if not path.is_file():
        _write(path, blob)
    return digest


def _write(path: Path, blob: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb", what="tuned O-net") as handle:
            handle.write(blob)
    except OSError as exc:
        raise MaskclsError(f"{path}: the tuned O-net cannot be written ({exc}); point MASKCLS_CACHE at a writable folder") from None


def _checked(path: Path, digest: str) -> bytes:
    blob = path.read_bytes()
    if _digest(blob) != digest:
        raise MaskclsError(f"{path}: damaged, its content does not match the O-net {digest} it is named for; "
                           "copy it again from the run or model folder trained with it")
    return blob


def load_onet(digest: str, folders=()) -> dict:
    """The state dict of O-net `digest`, from the store or else from a copy in one of `folders`."""
    from safetensors.torch import load

    for path in (store_dir() / weights_name(digest), *(Path(folder) / weights_name(digest) for folder in folders)):
        if path.is_file():
            return load(_checked(path, digest))
    where = ", ".join(str(p) for p in (store_dir(), *folders))
    raise MaskclsError(f"the detector's tuned O-net {digest} is not in {where}: copy {weights_name(digest)} from the run or "
                       f"model folder trained with it into {store_dir()}, or train again")


def adopt_onet(digest: str, folder) -> None:
    """Puts `folder`'s copy of O-net `digest` into the store, unless the store has it already."""
    stored = store_dir() / weights_name(digest)
    if stored.is_file():
        return
    copy = Path(folder) / weights_name(digest)
    if not copy.is_file():
        raise MaskclsError(f"{folder}: its detector uses the tuned O-net {digest}, but {weights_name(digest)} is neither here nor in "
                           f"{store_dir()}; copy it from the machine that trained this run")
    _write(stored, _checked(copy, digest))


def carry_onet(digest: str, folder) -> None:
    """A copy of the store's O-net `digest` in `folder`, so that the folder can move to another machine."""
    copy = Path(folder) / weights_name(digest)
    if not copy.is_file():
        stored = store_dir() / weights_name(digest)
        if not stored.is_file():
            raise MaskclsError(f"the tuned O-net {digest} is not in {store_dir()}: tune it again (train the run anew)")
        _write(copy, _checked(stored, digest))
