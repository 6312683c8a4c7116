import csv
import re

import numpy as np
import pytest
from PIL import Image

from maskcls.data.demo import write_demo_dataset
from maskcls.errors import MaskclsError
from maskcls.labels import PHOTO_MASK

SMALL = dict(persons=12, eval_persons=8, image_size=64, scene="tight")


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        return next(reader), list(reader)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", seed=3, **SMALL)


def test_returns_out_path(tmp_path):
    out = tmp_path / "data"
    assert write_demo_dataset(str(out), **SMALL) == out


def test_train_layout(small_dataset):
    header, rows = read_rows(small_dataset / "train" / "train.csv")
    assert header == ["id", "gender", "race", "age", "path"]
    assert len(rows) == SMALL["persons"]
    images_dir = small_dataset / "train" / "images"
    assert sorted(p.name for p in images_dir.iterdir()) == sorted(row[4] for row in rows)
    for person_id, gender, race, age, path in rows:
        assert re.fullmatch(r"\d{6}", person_id)
        assert gender in ("male", "female")
        assert race.isalpha()
        assert 18 <= int(age) <= 60
        assert path == f"{person_id}_{gender}_{race}_{age}"
        photos = [p for p in (images_dir / path).iterdir() if not p.name.startswith(".")]
        assert sorted(p.stem for p in photos) == sorted(PHOTO_MASK)
    assert len({row[0] for row in rows}) == len(rows)


def test_eval_layout(small_dataset):
    eval_dir = small_dataset / "eval"
    info_header, info = read_rows(eval_dir / "info.csv")
    truth_header, truth = read_rows(eval_dir / "truth.csv")
    meta_header, meta = read_rows(eval_dir / "meta.csv")
    assert info_header == ["ImageID", "ans"] and truth_header == ["ImageID", "ans"] and meta_header == ["ImageID", "id"]
    image_ids = [row[0] for row in info]
    assert len(image_ids) == SMALL["eval_persons"] * len(PHOTO_MASK)
    assert sorted(p.name for p in (eval_dir / "images").iterdir()) == sorted(image_ids)
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", image_id) for image_id in image_ids)
    assert {row[1] for row in info} == {"0"}
    assert [row[0] for row in truth] == image_ids and [row[0] for row in meta] == image_ids
    assert all(0 <= int(row[1]) <= 17 for row in truth)
    per_person = np.unique([row[1] for row in meta], return_counts=True)[1]
    assert len(per_person) == SMALL["eval_persons"] and set(per_person) == {len(PHOTO_MASK)}
    _, train_rows = read_rows(small_dataset / "train" / "train.csv")
    assert not {row[1] for row in meta} & {row[0] for row in train_rows}


def test_image_sizes(small_dataset):
    files = list((small_dataset / "eval" / "images").iterdir())[:5]
    files += [p for p in (small_dataset / "train" / "images").rglob("*") if p.is_file() and not p.name.startswith(".")][:10]
    for file in files:
        with Image.open(file) as image:
            assert image.size == (SMALL["image_size"], SMALL["image_size"])


def test_mixed_extensions_and_dot_files(small_dataset):
    files = [p for p in (small_dataset / "train" / "images").rglob("*") if p.is_file()]
    photos = [p for p in files if not p.name.startswith(".")]
    assert {p.suffix for p in photos} == {".jpg", ".jpeg", ".png"}
    dot_files = {p.name for p in files if p.name.startswith(".")}
    assert ".DS_Store" in dot_files and any(name.startswith("._") for name in dot_files)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = write_demo_dataset(tmp_path / "a", seed=7, **SMALL)
    second = write_demo_dataset(tmp_path / "b", seed=7, **SMALL)
    other = write_demo_dataset(tmp_path / "c", seed=8, **SMALL)
    for relative in ("train/train.csv", "eval/info.csv", "eval/truth.csv", "eval/meta.csv"):
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
        assert (first / relative).read_bytes() != (other / relative).read_bytes()
    _, rows = read_rows(first / "train" / "train.csv")
    folder = rows[0][4]
    for name in sorted(p.name for p in (first / "train" / "images" / folder).iterdir()):
        assert (first / "train" / "images" / folder / name).read_bytes() == (second / "train" / "images" / folder / name).read_bytes()
    _, info = read_rows(first / "eval" / "info.csv")
    for image_id, _ in info[:3]:
        assert (first / "eval" / "images" / image_id).read_bytes() == (second / "eval" / "images" / image_id).read_bytes()


def test_defaults_cover_all_classes(tmp_path):
    out = write_demo_dataset(tmp_path / "data", scene="tight")
    _, persons = read_rows(out / "train" / "train.csv")
    cells = {(gender, 0 if int(age) < 30 else 1 if int(age) < 60 else 2) for _, gender, _, age, _ in persons}
    assert len(cells) == 6  # each person has all three mask states, so 6 cells give 18 classes
    assert sum(gender == "female" for _, gender, *_ in persons) > len(persons) / 2
    _, truth = read_rows(out / "eval" / "truth.csv")
    assert set(int(label) for _, label in truth) == set(range(18))


@pytest.mark.parametrize("persons, eval_persons", [(5, 8), (12, 2)])
def test_too_few_persons(tmp_path, persons, eval_persons):
    with pytest.raises(MaskclsError, match="at least 6") as raised:
        write_demo_dataset(tmp_path / "data", persons=persons, eval_persons=eval_persons)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_refuses_to_write_over_existing_data(tmp_path):
    out = write_demo_dataset(tmp_path / "data", **SMALL)
    with pytest.raises(MaskclsError, match="already exists"):
        write_demo_dataset(out, **SMALL)
