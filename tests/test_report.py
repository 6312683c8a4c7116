import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskcls.errors import MaskclsError
from maskcls.labels import class_name
from maskcls.metrics import score
from maskcls.report import evaluate_files, worst_persons, write_report

N_PERSONS = 10
PHOTOS = 7


@pytest.fixture
def predictions():
    """70 photos of 10 persons; person 3 gets 3 photos wrong, person 7 one, the rest none."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(N_PERSONS), PHOTOS)
    y_true = rng.integers(0, 18, len(groups))
    y_pred = y_true.copy()
    wrong_rows = [21, 22, 23, 50]
    y_pred[wrong_rows] = (y_true[wrong_rows] + 1) % 18
    probs = np.full((len(groups), 18), 0.02)
    probs[np.arange(len(groups)), y_pred] = 1 - 0.02 * 17
    return y_true, y_pred, probs, groups


def write_photos(folder, n):
    folder.mkdir()
    paths = []
    for index in range(n):
        path = folder / f"{index:03d}.jpg"
        Image.new("RGB", (120, 160), (index * 3 % 256, 80, 160)).save(path)
        paths.append(str(path))
    return paths


def test_write_report_files_and_numbers(tmp_path, predictions):
    y_true, y_pred, probs, groups = predictions
    thumbnails = write_photos(tmp_path / "photos", len(y_true))
    out = tmp_path / "report"
    summary = write_report(y_true, y_pred, out, probs=probs, groups=groups, thumbnails=thumbnails, title="unit <test>")

    for name in ("report.html", "confusion_18.png", "confusion_age.png", "per_class.csv", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    expected = score(y_true, y_pred)
    written = json.loads((out / "summary.json").read_text())
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value)
        assert written[key] == pytest.approx(value)
    assert written["n_images"] == len(y_true)

    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == 18
    assert list(per_class.columns[:6]) == ["label", "name", "precision", "recall", "f1", "support"]
    assert per_class["support"].sum() == len(y_true)
    assert per_class["f1"].mean() == pytest.approx(expected["macro_f1"])
    assert per_class.loc[17, "name"] == class_name(17)

    page = (out / "report.html").read_text()
    assert "unit &lt;test&gt;" in page  # the title is escaped
    assert f"{expected['macro_f1']:.4f}" in page
    # Two confusion images plus 7 + 7 photo thumbnails of the two persons with wrong photos.
    assert page.count('src="data:image/png;base64,') == 2 + 2 * PHOTOS
    assert "person 3: 3 of 7 photos wrong" in page
    assert "person 7: 1 of 7 photos wrong" in page
    assert page.index("person 3:") < page.index("person 7:")
    assert "person 0:" not in page


def test_worst_persons_ranking_uses_probability_for_ties():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([1, 0, 0, 1, 0, 2])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    probs = np.full((6, 18), 0.01)
    probs[:, 0] = [0.3, 0.9, 0.9, 0.1, 0.5, 0.1]
    probs[:, 1] = [0.6, 0.05, 0.05, 0.8, 0.1, 0.1]
    probs[:, 2] = [0.05, 0.03, 0.03, 0.08, 0.38, 0.78]
    # One wrong photo each; b's mean p(true) is (0.05 + 0.8) / 2 = 0.425, c's 0.58, a's 0.6.
    ranked = worst_persons(y_true, y_pred, groups, probs)
    assert ranked["person"].tolist() == ["b", "c", "a"]
    assert ranked["n_wrong"].tolist() == [1, 1, 1]


def test_without_groups_lists_worst_images(tmp_path, predictions):
    y_true, y_pred, _, _ = predictions
    write_report(y_true, y_pred, tmp_path / "plain")
    page = (tmp_path / "plain" / "report.html").read_text()
    assert "Wrongly predicted images" in page
    assert page.count("<figure") == 4


def write_csv(path, rows, header="ImageID,ans"):
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_evaluate_files_aligns_on_image_id(tmp_path):
    ids = [f"img{index}.jpg" for index in range(36)]
    truth = [(image_id, index % 18) for index, image_id in enumerate(ids)]
    # Predictions in another order; img35 (person 5) and img25 (person 4) wrong.
    submitted = list(reversed(truth))
    submitted[0] = (submitted[0][0], (submitted[0][1] + 1) % 18)
    submitted[10] = (submitted[10][0], (submitted[10][1] + 1) % 18)
    pred_csv = write_csv(tmp_path / "submission.csv", submitted)
    truth_csv = write_csv(tmp_path / "truth.csv", truth)
    images = tmp_path / "images"
    images.mkdir()
    for image_id in ids:
        Image.new("RGB", (32, 32)).save(images / image_id, format="PNG")
    meta_csv = write_csv(tmp_path / "meta.csv", [(image_id, index // 6) for index, image_id in enumerate(ids)], "ImageID,id")
    probs = np.full((36, 18), 1 / 18)
    np.save(tmp_path / "probs.npy", probs)

    summary = evaluate_files(pred_csv, truth_csv, tmp_path / "out", probs_path=tmp_path / "probs.npy",
                             images_dir=images, meta_csv=meta_csv)
    assert summary["accuracy"] == pytest.approx(34 / 36)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "person 5: 1 of 6 photos wrong" in page and "person 4: 1 of 6 photos wrong" in page
    assert "img35.jpg" in page and "img25.jpg" in page
    assert page.count('src="data:image/png;base64,') == 2 + 2 * 6


def test_evaluate_files_errors(tmp_path):
    truth_csv = write_csv(tmp_path / "truth.csv", [("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 2)])
    out = tmp_path / "out"

    with pytest.raises(MaskclsError, match=r"nope\.csv: not found; the submission CSV is missing"):
        evaluate_files(tmp_path / "nope.csv", truth_csv, out)

    wrong_columns = tmp_path / "wrong_columns.csv"
    wrong_columns.write_text("ImageID,label\na.jpg,0\n")
    expected = r"wrong_columns\.csv: missing column\(s\) ans; the header must be ImageID,ans \(found ImageID,label\)"
    with pytest.raises(MaskclsError, match=expected):
        evaluate_files(wrong_columns, truth_csv, out)

    mismatched = write_csv(tmp_path / "mismatched.csv", [("a.jpg", 0), ("z.jpg", 1)])
    with pytest.raises(MaskclsError) as error:
        evaluate_files(mismatched, truth_csv, out)
    message = str(error.value)
    assert "mismatched.csv" in message
    assert "2 truth ID(s) missing from the submission (e.g. b.jpg)" in message
    assert "1 extra ID(s) not in the truth (e.g. z.jpg)" in message

    bad_label = write_csv(tmp_path / "bad_label.csv", [("a.jpg", 0), ("b.jpg", 18), ("c.jpg", 2)])
    with pytest.raises(MaskclsError, match=r"bad_label\.csv: line 3 \(ImageID b\.jpg\): ans '18' is not a class 0\.\.17"):
        evaluate_files(bad_label, truth_csv, out)

    good = write_csv(tmp_path / "good.csv", [("c.jpg", 2), ("a.jpg", 0), ("b.jpg", 1)])
    np.save(tmp_path / "short.npy", np.zeros((2, 18)))
    with pytest.raises(MaskclsError, match=r"short\.npy: shape \(2, 18\), expected \(3, 18\)"):
        evaluate_files(good, truth_csv, out, probs_path=tmp_path / "short.npy")

    meta = write_csv(tmp_path / "meta.csv", [("a.jpg", 1)], "ImageID,id")
    with pytest.raises(MaskclsError, match=r"meta\.csv: 2 submission ImageID\(s\) have no person id \(e\.g\. b\.jpg\)"):
        evaluate_files(good, truth_csv, out, meta_csv=meta)
    assert not out.exists()  # no half-written report after an input error
