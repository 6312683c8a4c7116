"""Run folders: never overwrite a run, never leave a half-written file."""
from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

from ..config import dump_config
from ..errors import MaskclsError
from ..fileio import atomic_write, atomic_write_text
from .distributed import is_main_process


def new_run_dir(out: str, name: str | None, config_name: str = "run") -> Path:
    """A fresh folder; an explicit name that already exists is an error, not an overwrite."""
    out = Path(out)
    if name:
        run_dir = out / name
        if run_dir.exists():
            raise MaskclsError(f"{run_dir}: run folder already exists; choose another name=..., or continue it with --resume {run_dir}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = out / f"{stamp}-{config_name}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = out / f"{stamp}-{config_name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def git_commit() -> str:
    """The code's commit (with -dirty when the tree has changes), or 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_run_files(run_dir: Path, cfg) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    atomic_write_text(run_dir / "git_commit.txt", git_commit() + "\n")


class MetricsLog:
    """metrics.csv, one row per epoch, rewritten whole (atomically) after each epoch.

    The rows also travel inside last.pt, so a resumed run restores exactly the rows of the
    epochs its checkpoint holds, whichever of the two files a kill interrupted. Under torchrun
    every process keeps the rows and the main process alone writes them.
    """

    def __init__(self, path: Path, rows: list[dict] | None = None):
        self.path = path
        self.rows = list(rows or [])
        self._write()

    def append(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        if not self.rows or not is_main_process():
            return
        with atomic_write(self.path, what="metrics table") as handle:
            writer = csv.DictWriter(handle, list(self.rows[-1]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
