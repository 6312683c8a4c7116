"""preprocess.crop=auto: decided once when a run starts, on the train photos, and recorded as such."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from maskcls import checkpoint
from maskcls.config import load_config
from maskcls.data.cropped import write_cropped_copy
from maskcls.faces.scene import WIDE_FACE_WIDTH, scene_check
from maskcls.train import train
from maskcls.train.engine import resolved_crop

TINY = ["model.backbone=resnet10t", "model.weights=none", "preprocess.size=48", "train.batch_size=16", "data.num_workers=0",
        "tracking=[]", "train.epochs=1", "preprocess.crop_onet=packaged", "data.val_fraction=0.34"]


@pytest.fixture(scope="module")
def tight_root(wide_root, tmp_path_factory):
    """The wide scenes cut back to their faces: the same persons, photos that are faces."""
    out = tmp_path_factory.mktemp("tight") / "data"
    write_cropped_copy(wide_root, out, margin=0.1, size=96, progress=False, align="box", onet="packaged")
    return out


def bare_photos(root):
    return sorted(str(p) for p in (root / "train" / "images").glob("*/normal.*"))


def test_scenes_and_faces_are_told_apart_by_the_width_of_the_face(wide_root, tight_root):
    wide, tight = scene_check(bare_photos(wide_root)), scene_check(bare_photos(tight_root))
    assert wide.wide and wide.faces == wide.photos == 12 and wide.median_width < WIDE_FACE_WIDTH
    assert not tight.wide and tight.faces > tight.photos / 2 and tight.median_width > WIDE_FACE_WIDTH
    assert "12 of 12 sampled photos" in wide.describe()


def test_photos_without_a_face_are_not_scenes(tmp_path):
    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((512, 384, 3), 40 * i, np.uint8)).save(files[-1])
    check = scene_check(map(str, files))
    assert (check.photos, check.faces, check.median_width, check.wide) == (4, 0, None, False)
    assert check.describe() == "no face found in 4 sampled photos"


def test_auto_is_the_default_and_resolves_per_data_set(wide_root, tight_root, capsys):
    assert load_config(None, []).preprocess.crop == "auto"
    assert resolved_crop(load_config(None, [f"data.root={wide_root}"]), progress=True).preprocess.crop == "mtcnn"
    assert "preprocess.crop=auto: mtcnn (a face found in 12 of 12" in capsys.readouterr().out
    assert resolved_crop(load_config(None, [f"data.root={tight_root}"]), progress=False).preprocess.crop == "none"
    explicit = load_config(None, [f"data.root={wide_root}", "preprocess.crop=none"])
    assert resolved_crop(explicit, progress=True) is explicit and capsys.readouterr().out == ""


def test_a_run_records_the_crop_auto_chose_and_its_resume_keeps_it(wide_root, tight_root, tmp_path):
    for root, crop in ((wide_root, "mtcnn"), (tight_root, "none")):
        result = train(load_config(None, [f"data.root={root}", f"out={tmp_path / crop}", *TINY]), progress=False)
        run_dir = Path(result["run_dir"])
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["preprocess"]["crop"] == crop
        assert checkpoint.load(run_dir / "best.pt")["preprocess"]["crop"] == crop
        # A resume reads the recorded config, so the data set is not looked at again.
        assert train(resume=run_dir, progress=False)["run_dir"] == str(run_dir)
