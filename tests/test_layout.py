"""Parsing the competition layout, with every oddity the real data is known to contain."""
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from maskcls.data.fixes import apply_label_fixes
from maskcls.data.layout import check, load_eval, load_train
from maskcls.errors import MaskclsError


def _csv(root):
    return root / "train" / "train.csv"


def _rewrite_csv(root, edit):
    table = pd.read_csv(_csv(root), dtype=str)
    table = edit(table)
    table.to_csv(_csv(root), index=False)
    return table


def test_reads_demo_layout_with_dot_files_and_mixed_extensions(demo_root):
    data = load_train(demo_root)
    assert len(data.images) == 7 * len(data.persons)
    assert data.skipped.get("dot-files", 0) > 0
    assert {f.rsplit(".", 1)[1] for f in data.images["file"]} >= {"jpg", "png"}
    assert set(data.images["photo"]) == {"mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"}
    assert all(sorted(masks) == [0, 0, 0, 0, 0, 1, 2] for _, masks in data.images.groupby("path")["mask"])
    # the label is derived from the folder's person row
    row = data.persons.iloc[0]
    labels = data.images.loc[data.images["path"] == row["path"], "label"]
    assert set(labels % 6) == {row["gender_code"] * 3 + row["age_group"]}


def test_unknown_file_names_are_skipped_and_counted(demo_copy):
    folder = next((demo_copy / "train" / "images").iterdir())
    (folder / "notes.txt").write_text("x")
    (folder / "mask9.jpg").write_bytes(b"x")
    assert load_train(demo_copy).skipped["unknown names"] == 2


def test_accepts_train_folder_itself(demo_root):
    assert len(load_train(demo_root / "train").persons) == len(load_train(demo_root).persons)


def test_missing_csv(tmp_path):
    with pytest.raises(MaskclsError, match=r"train\.csv: not found; point maskcls at the folder holding train/train.csv"):
        load_train(tmp_path)


def test_wrong_columns(demo_copy):
    _rewrite_csv(demo_copy, lambda t: t.drop(columns=["age"]))
    with pytest.raises(MaskclsError, match=r"missing column\(s\) age; the header must be id,gender,race,age,path"):
        load_train(demo_copy)


def test_folder_in_csv_not_on_disk(demo_copy):
    table = pd.read_csv(_csv(demo_copy), dtype=str)
    shutil.rmtree(demo_copy / "train" / "images" / table["path"][2])
    with pytest.raises(MaskclsError, match=rf"{table['path'][2]}: listed in train.csv \(id {table['id'][2]}\) but not on disk"):
        load_train(demo_copy)


def test_person_with_missing_photos(demo_copy):
    folder = demo_copy / "train" / "images" / pd.read_csv(_csv(demo_copy), dtype=str)["path"][0]
    for file in folder.glob("normal.*"):
        file.unlink()
    with pytest.raises(MaskclsError, match=r"missing photo\(s\) normal; each person needs mask1..mask5, incorrect_mask and normal"):
        load_train(demo_copy)


def _photo(root, row, photo):
    """The file of one photo of the person on train.csv's `row`."""
    folder = root / "train" / "images" / pd.read_csv(_csv(root), dtype=str)["path"][row]
    return next(folder.glob(f"{photo}.*"))


def test_zero_byte_image(demo_copy):
    target = _photo(demo_copy, 1, "mask3")
    target.write_bytes(b"")
    with pytest.raises(MaskclsError, match=rf"{target.name}: zero-byte image"):
        load_train(demo_copy)


def test_corrupt_image_found_by_check(demo_copy):
    target = _photo(demo_copy, 1, "mask2")
    target.write_bytes(b"not an image at all")
    load_train(demo_copy)  # cheap load does not decode
    with pytest.raises(MaskclsError, match=rf"{target.name}: cannot be decoded as an image"):
        check(demo_copy, progress=False)


def test_duplicate_id_is_a_warning_and_duplicate_folder_an_error(demo_copy):
    table = _rewrite_csv(demo_copy, lambda t: t.assign(id=t["id"].where(t.index != 1, t["id"][0])))
    data = load_train(demo_copy)
    assert any(f"id(s) {table['id'][0]} shared by folders" in w for w in data.warnings)
    assert len(data.persons) == len(table)
    _rewrite_csv(demo_copy, lambda t: pd.concat([t, t.iloc[[3]]]))
    with pytest.raises(MaskclsError, match=r"is listed 2 times; remove the repeated line"):
        load_train(demo_copy)


def test_unknown_gender(demo_copy):
    _rewrite_csv(demo_copy, lambda t: t.assign(gender=t["gender"].where(t.index != 4, "M")))
    with pytest.raises(MaskclsError, match=r"line 6 \(id \d+\): gender 'M' is not male/female; fix that line"):
        load_train(demo_copy)


def test_non_integer_age(demo_copy):
    _rewrite_csv(demo_copy, lambda t: t.assign(age=t["age"].where(t.index != 0, "4x")))
    with pytest.raises(MaskclsError, match=r"line 2 \(id \d+\): age '4x' is not a whole number"):
        load_train(demo_copy)


def test_eval_image_listed_but_missing(demo_copy):
    info = pd.read_csv(demo_copy / "eval" / "info.csv", dtype=str)
    (demo_copy / "eval" / "images" / info["ImageID"][5]).unlink()
    with pytest.raises(MaskclsError, match=rf"{info['ImageID'][5]}: listed in .*info.csv but not on disk"):
        load_eval(demo_copy)


def test_eval_reads_in_file_order(demo_root):
    evaluation = load_eval(demo_root)
    info = pd.read_csv(demo_root / "eval" / "info.csv", dtype=str)
    assert evaluation.info["ImageID"].tolist() == info["ImageID"].tolist()
    assert [f.rsplit("/", 1)[1] for f in evaluation.files] == info["ImageID"].tolist()


def test_label_fixes_change_gender_age_and_swap_photos(demo_copy, tmp_path, caplog):
    data = load_train(demo_copy)
    first, second, third = data.persons["path"][:3]
    old_gender = data.persons["gender"][0]
    new_gender = "female" if old_gender == "male" else "male"
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(
        "# maskcls-label-fixes v1\npath,field,value,note\n"
        f"{first},gender,{new_gender},x\n{second},age,65,\n{third},swap_incorrect_normal,,swapped\n"
    )
    caplog.set_level("INFO")
    fixed = load_train(demo_copy, label_fixes=fixes)
    person = fixed.persons.set_index("path")
    assert person.loc[first, "gender"] == new_gender and person.loc[second, "age_group"] == 2
    before = data.images[data.images["path"] == third].set_index("file")["mask"]
    after = fixed.images[fixed.images["path"] == third].set_index("file")["mask"]
    swapped = before != after
    assert sorted(before[swapped]) == [1, 2] and sorted(after[swapped]) == [1, 2]
    assert "incorrect_mask <-> normal swapped" in caplog.text
    assert any("applied 3 label fix(es)" in w for w in fixed.warnings)


def test_shipped_example_fixes_parse(tmp_path):
    from maskcls.data.fixes import read_label_fixes

    fixes = read_label_fixes("configs/label_fixes.example.csv")
    assert [f["field"] for f in fixes] == ["gender", "age", "swap_incorrect_normal"]


@pytest.mark.parametrize("body,message", [
    ("path,field,value\nx,gender,female\n", r"first line must be '# maskcls-label-fixes v1'"),
    ("# maskcls-label-fixes v1\npath,field,value,note\nx,height,3,\n", r"line 3: field 'height' is not one of gender, age"),
    ("# maskcls-label-fixes v1\npath,field,value,note\nnobody,age,30,\n", r"folder 'nobody' is not in train.csv"),
])
def test_label_fix_errors(demo_root, tmp_path, body, message):
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(body)
    with pytest.raises(MaskclsError, match=message):
        apply_label_fixes(load_train(demo_root), fixes, (30, 60))


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "maskcls", "check", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("maskcls: error:") and "Traceback" not in result.stderr


def test_cli_check_prints_summary(demo_root):
    result = subprocess.run([sys.executable, "-m", "maskcls", "-q", "check", str(demo_root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train: 30 persons, 210 photos, all decodable" in result.stdout
    assert "eval: 84 images listed, all present and decodable" in result.stdout


def test_a_warning_is_logged_once_however_often_the_folder_is_loaded(demo_copy, caplog):
    images = demo_copy / "train" / "images"
    shutil.copytree(images / load_train(demo_copy).persons["path"][0], images / "000000_female_Asian_20")
    caplog.set_level("WARNING")
    first, second = load_train(demo_copy), load_train(demo_copy)
    assert caplog.text.count("1 entry not in train.csv") == 1
    assert any("not in train.csv" in w for w in first.warnings) and first.warnings == second.warnings
