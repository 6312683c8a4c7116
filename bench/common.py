"""Shared by the benchmarks: where the stand-in data is, building it when missing, and a random
colour for the scenes bench/widen.py and bench/camera_scenes.py draw.

The stand-in (real UTKFace faces with warped masks) comes from ../shared/standin/build.py; it is
written outside the repository's tracked files and never committed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STANDIN = Path(os.environ.get("MASKCLS_STANDIN", REPO / "data" / "standin"))
BUILDER = REPO.parent / "shared" / "standin" / "build.py"


def standin(path=None) -> Path:
    path = Path(path or DEFAULT_STANDIN)
    if not (path / "train" / "train.csv").exists() or not (path / "eval" / "truth.csv").exists():
        if not BUILDER.exists():
            sys.exit(f"bench: no stand-in data at {path} and no builder at {BUILDER}; pass --data DIR or set MASKCLS_STANDIN")
        print(f"building the stand-in data into {path} (about 4 minutes) ...", flush=True)
        subprocess.run([sys.executable, str(BUILDER), "--out", str(path)], check=True)
    return path


def eval_column(data: Path, csv_name: str, column: str, image_ids):
    """A column of eval/truth.csv or eval/meta.csv, in the order of `image_ids` (info.csv's)."""
    import pandas as pd

    table = pd.read_csv(data / "eval" / csv_name, dtype={"ImageID": str, "id": str})
    return table.set_index("ImageID").loc[list(image_ids), column].to_numpy()


def colour(rng, low=20, high=235):
    """A random RGB colour (float32), each channel in [low, high)."""
    import numpy as np

    return rng.uniform(low, high, 3).astype(np.float32)
