import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from maskcls.data.demo import write_demo_dataset
from maskcls.data.layout import load_train
from maskcls.eda import run_eda
from maskcls.labels import NUM_CLASSES

TRAIN_PERSONS = 24
EVAL_PERSONS = 6
PHOTOS = 7
EXPECTED_PLOTS = {
    "persons_gender.png", "persons_age_group.png", "persons_race.png", "age_histogram.png",
    "class_counts.png", "mask_ratio.png", "grid_mask_states.png", "grid_classes.png",
    "hash_distance.png", "brightness_histogram.png",
}


def _photo_file(images, path, photo):
    return images.loc[(images["path"] == path) & (images["photo"] == photo), "file"].item()


@pytest.fixture(scope="module")
def eda(tmp_path_factory):
    """Demo data with four planted problems (in the first four persons with .jpg photos), analysed once.

    person 0: normal copied byte for byte over mask1      -> near-duplicate, identical file
    person 1: normal re-encoded as JPEG over mask2        -> near-duplicate, not identical
    person 2: mask3 replaced by an almost black photo     -> brightness outlier
    person 3: mask4 replaced by bytes that are no image   -> unreadable, listed, run goes on
    """
    root = write_demo_dataset(
        tmp_path_factory.mktemp("data"), persons=TRAIN_PERSONS, eval_persons=EVAL_PERSONS, image_size=64, seed=0, scene="tight"
    )
    images = load_train(root).images
    jpeg_persons = sorted(images.loc[images["file"].str.endswith(".jpg"), "path"].unique())
    copied, reencoded, darkened, broken = jpeg_persons[:4]

    shutil.copyfile(_photo_file(images, copied, "normal"), _photo_file(images, copied, "mask1"))
    buffer = io.BytesIO()
    Image.open(_photo_file(images, reencoded, "normal")).save(buffer, format="JPEG", quality=60)
    with open(_photo_file(images, reencoded, "mask2"), "wb") as handle:
        handle.write(buffer.getvalue())
    noise = np.random.default_rng(0).integers(0, 12, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(_photo_file(images, darkened, "mask3"), format="JPEG")
    with open(_photo_file(images, broken, "mask4"), "wb") as handle:
        handle.write(b"not an image at all")

    out_dir = tmp_path_factory.mktemp("eda")
    summary = run_eda(root, out_dir, sample_stats=None, progress=False, seed=0)
    planted = {"copied": copied, "reencoded": reencoded, "darkened": darkened, "broken": broken}
    return root, out_dir, summary, planted, images


def test_report_is_self_contained_html_with_embedded_images(eda):
    _, out_dir, summary, _, _ = eda
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(summary["plots"])
    assert sources and all(source.startswith("data:image/") for source in sources)  # nothing to fetch
    assert "Suggested normalisation" in page


def test_expected_plots_are_written(eda):
    _, out_dir, summary, _, _ = eda
    assert set(summary["plots"]) == EXPECTED_PLOTS
    for name in EXPECTED_PLOTS:
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG"


def test_counts_match_the_image_table(eda):
    _, out_dir, summary, _, images = eda
    assert summary["class_counts"] == np.bincount(images["label"], minlength=NUM_CLASSES).tolist()
    assert summary["n_images"] == len(images) == TRAIN_PERSONS * PHOTOS
    assert summary["n_persons"] == TRAIN_PERSONS
    assert sum(summary["persons_by_gender"].values()) == sum(summary["persons_by_age_group"].values()) == TRAIN_PERSONS
    assert sum(summary["persons_by_race"].values()) == TRAIN_PERSONS
    assert summary["mask_ratio"] == pytest.approx({"wear": 5 / 7, "incorrect": 1 / 7, "not wear": 1 / 7}, abs=1e-4)
    # The broken file has no size or mode; every other image has.
    assert sum(summary["image_sizes"].values()) == len(images) - 1
    assert summary["eval"]["n_images"] == summary["eval"]["n_listed_in_info_csv"] == EVAL_PERSONS * PHOTOS
    assert json.loads((out_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_channel_statistics_are_on_the_unit_scale(eda):
    _, _, summary, _, _ = eda
    assert summary["stats_images"] == TRAIN_PERSONS * PHOTOS - 1  # sample_stats=None: all readable images
    assert len(summary["channel_mean"]) == len(summary["channel_std"]) == 3
    assert all(0 < value < 1 for value in summary["channel_mean"] + summary["channel_std"])


def test_planted_near_duplicates_are_flagged_and_nothing_else(eda):
    _, _, summary, planted, _ = eda
    flagged = {(d["path"], d["photo_a"], d["photo_b"]): d for d in summary["near_duplicates"]}
    assert set(flagged) == {(planted["copied"], "normal", "mask1"), (planted["reencoded"], "normal", "mask2")}
    assert flagged[(planted["copied"], "normal", "mask1")]["identical_file"]
    assert not flagged[(planted["reencoded"], "normal", "mask2")]["identical_file"]


def test_planted_dark_photo_is_the_worst_brightness_outlier(eda):
    _, _, summary, planted, _ = eda
    worst = summary["brightness_outliers"][0]
    assert (worst["path"], worst["photo"]) == (planted["darkened"], "mask3")
    assert worst["z"] < -3.5


def test_unreadable_image_is_listed_not_fatal(eda):
    _, _, summary, planted, images = eda
    assert [u["file"] for u in summary["unreadable"]] == [_photo_file(images, planted["broken"], "mask4")]


def test_channel_sample_is_deterministic_for_a_seed(eda, tmp_path):
    root, _, _, _, _ = eda
    first = run_eda(root, tmp_path / "a", sample_stats=20, progress=False, seed=3)
    second = run_eda(root, tmp_path / "b", sample_stats=20, progress=False, seed=3)
    assert 0 < first["stats_images"] <= 20  # the broken file may be among the 20
    assert first["channel_mean"] == second["channel_mean"] and first["channel_std"] == second["channel_std"]
