"""Bad input and faults, class by class: nothing accepted silently, nothing overwritten without
--force, every failure one clear line (the exact line, the exit code, and what was not written)."""
import errno
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli, cli_here, tiny_config
from PIL import Image

from maskcls.cli import error_line
from maskcls.data.layout import check, load_train
from maskcls.errors import MaskclsError
from maskcls.train import run_cv, train

TINY = ["model.backbone=resnet10t", "model.weights=none", "preprocess.size=48", "train.batch_size=16", "data.num_workers=0",
        "tracking=[]", "train.epochs=1", "preprocess.crop=none"]


def one_line_error(result, expected: str):
    """The command failed with exit 2 and said exactly `maskcls: error: <expected...>` on one line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("maskcls: WARNING")]
    assert len(lines) == 1 and lines[0].startswith(f"maskcls: error: {expected}"), result.stderr


def first_person(root) -> Path:
    return next(p for p in sorted((root / "train" / "images").iterdir()) if not p.name.startswith("."))


def photo(root, name="mask1") -> Path:
    return next(first_person(root).glob(f"{name}.*"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory):
    return Path(train(tiny_config(demo_root, tmp_path_factory.mktemp("runs"), "name=run"), progress=False)["run_dir"])


# -- check flags what it should ------------------------------------------------------------------

def rewrite_csv(root, edit):
    csv = root / "train" / "train.csv"
    edit(pd.read_csv(csv, dtype=str)).to_csv(csv, index=False)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "train" / "train.csv").unlink(), r"train/train.csv: not found, but .*train/images is there; restore train.csv"),
    (lambda r: rewrite_csv(r, lambda t: t.iloc[:0]), r"train.csv: lists no persons \(only a header\)"),
    (lambda r: rewrite_csv(r, lambda t: pd.concat([t, t.iloc[:1].assign(id="999999", path="./" + t["path"][0])])),
     r"train.csv: folder '.*' is listed 2 times; remove the repeated line"),
    (lambda r: rewrite_csv(r, lambda t: t.assign(path=t["path"].where(t.index != 0, "../escape"))),
     r"path '../escape' must be a folder name under train/images/"),
    (lambda r: truncate(photo(r)), r".*mask1.jpg: truncated JPEG \(no end-of-image marker\); the photo is damaged"),
    (lambda r: (r / "eval" / "info.csv").write_text("ImageID,ans\n" + "a.jpg,0\n" * 2), r".*info.csv: line 3: ImageID 'a.jpg' is listed twice"),
])
def test_check_refuses_broken_data(demo_copy, damage, message):
    damage(demo_copy)
    with pytest.raises(MaskclsError, match=message):
        check(demo_copy, progress=False)


@pytest.mark.parametrize("oddity, warning", [
    (lambda r: rewrite_csv(r, lambda t: t.assign(age=t["age"].where(t.index != 0, "150"))), r"age 150 is above 100; check it"),
    (lambda r: shutil.copytree(first_person(r), r / "train" / "images" / "000000_female_Asian_20"),
     r"1 entry not in train.csv \(e.g. 000000_female_Asian_20\); they are not used"),
    (lambda r: shutil.copy(next((r / "eval" / "images").iterdir()), r / "eval" / "images" / "stray.jpg"),
     r"1 image\(s\) not in info.csv \(e.g. stray.jpg\); they are not predicted"),
    (lambda r: Image.new("RGB", (1, 1)).save(photo(r)), r"1 photo\(s\) smaller than 16 px on a side"),
])
def test_check_warns_and_strict_refuses(demo_copy, oddity, warning):
    oddity(demo_copy)
    lines = check(demo_copy, progress=False)
    assert any(line.startswith("warning: ") and __import__("re").search(warning, line) for line in lines), lines
    one_line_error(cli("check", demo_copy, "--strict"), "--strict: ")


def test_a_damaged_train_photo_stops_training_or_is_left_out(demo_copy, tmp_path):
    bad = photo(demo_copy, "normal")
    truncate(bad)
    with pytest.raises(MaskclsError, match=rf"{bad}: truncated JPEG .*pass data.bad_images=skip to train without them"):
        train(tiny_config(demo_copy, tmp_path / "runs", "name=stop", *TINY[-1:]), progress=False)
    assert not (tmp_path / "runs" / "stop").exists()
    result = train(tiny_config(demo_copy, tmp_path / "runs", "name=skip", "data.bad_images=skip", *TINY[-1:]), progress=False)
    val = pd.read_csv(Path(result["run_dir"]) / "val_images.csv")
    assert str(bad) not in set(val["file"]) and len(load_train(demo_copy).images) == 7 * 30


def test_a_damaged_eval_photo_inside_a_loader_worker_is_one_line(trained_run, demo_copy, tmp_path):
    image = sorted((demo_copy / "eval" / "images").iterdir())[3]
    image.write_bytes(b"not an image")
    one_line_error(cli("predict", trained_run, "--data", demo_copy / "eval", "--out", tmp_path / "s.csv"),
                   f"{image}: cannot be decoded as an image; replace or remove it")
    assert not (tmp_path / "s.csv").exists()


# -- nothing overwritten without --force -------------------------------------------------------------

def test_predict_never_overwrites_without_force_and_never_an_input(trained_run, demo_root, tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("mine\n")
    one_line_error(cli("predict", trained_run, "--data", demo_root / "eval", "--out", out),
                   f"{out}: exists; pass --force to replace it, or choose another --out")
    assert out.read_text() == "mine\n"
    assert cli("predict", trained_run, "--data", demo_root / "eval", "--out", out, "--force").returncode == 0
    assert out.read_text().startswith("ImageID,ans")
    info = demo_root / "eval" / "info.csv"
    before = info.read_bytes()
    one_line_error(cli("predict", trained_run, "--data", demo_root / "eval", "--out", info, "--force"),
                   f"{info}: is an input of this prediction; write the submission elsewhere")
    assert info.read_bytes() == before


def heavy_imports_of(*args) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`maskcls ARGS` in a fresh process, and which of torch, timm and albumentations it imported."""
    probe = ("import sys\nfrom maskcls.cli import main\ncode = main(sys.argv[1:])\n"
             "print(code, ','.join(m for m in ('torch', 'timm', 'albumentations') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, "-q", *map(str, args)], capture_output=True, text=True)
    code, _, imported = result.stdout.strip().partition(" ")
    assert code == "2", (result.stdout, result.stderr)
    return result, [m for m in imported.split(",") if m]


def test_a_kept_output_or_a_missing_model_is_refused_before_any_model_is_imported(trained_run, demo_root, tmp_path):
    """The refusals must not wait on torch and timm, which take seconds to import."""
    out = tmp_path / "sub.csv"
    out.write_text("mine\n")
    result, imported = heavy_imports_of("predict", trained_run, "--data", demo_root / "eval", "--out", out)
    assert imported == [] and f"{out}: exists; pass --force" in result.stderr and out.read_text() == "mine\n"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    result, imported = heavy_imports_of("export", trained_run, "--out", tmp_path / "model")
    assert imported == [] and "exists and is not empty; pass --force" in result.stderr
    result, imported = heavy_imports_of("serve", tmp_path / "nothing")
    assert imported == [] and f"{tmp_path / 'nothing'}: not found" in result.stderr


# -- unclear failures become one line ----------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["check", "{data}", "--age-cuts", "60", "30"], "--age-cuts 60 30: the cuts must increase"),
    (["eda", "{data}", "--out", "{tmp}/eda", "--age-cuts", "60", "30"], "--age-cuts 60 30: the cuts must increase"),
    (["predict", "{run}", "--data", "{data}/eval", "--out", "{tmp}/s.csv", "--batch-size", "0"], "batch size 0: must be at least 1"),
    (["cv", "--folds", "0", "data.root={data}", "out={tmp}/cv"], "--folds 0: use at least 2 folds"),
    (["train", "data.root={data}", "out={tmp}/runs", "device=cuda"], "device=cuda: this machine has no such CUDA GPU"),
    (["train", "data.root={data}", "out={tmp}/runs", "train.lr=-1"], "train.lr=-1.0: must be greater than 0"),
    (["train", "--resume", "{run}", "train.epochs=5"], "--resume continues"),
    (["check-submission", "{tmp}/empty.csv", "--info", "{data}/eval/info.csv"], "{tmp}/empty.csv: empty file"),
    (["predict", "{tmp}/broken", "--data", "{data}/eval", "--out", "{tmp}/s.csv"], "{tmp}/broken/best.pt: damaged or not a maskcls checkpoint"),
    (["predict", "{run}", "--data", "{data}/eval", "--out", "/etc/hostname/sub.csv"], "/etc/hostname"),
    (["train", "--config", "{tmp}/list.yaml"], "{tmp}/list.yaml: the top level must be a mapping"),
])
def test_failures_are_one_line(trained_run, demo_root, tmp_path, args, expected):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "best.pt").write_bytes((trained_run / "best.pt").read_bytes()[:5000])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    fill = {"data": demo_root, "tmp": tmp_path, "run": trained_run}
    one_line_error(cli_here(*[a.format(**fill) for a in args]), expected.format(**fill))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cv").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("code, expected", [
    (errno.ENOSPC, "/x/last.pt: disk full; free space and run the command again"),
    (errno.EROFS, "/x/last.pt: read-only file system; choose a writable location (--out)"),
    (errno.EACCES, "/x/last.pt: permission denied"),
    (errno.EISDIR, "/x/last.pt: is a folder, but a file is wanted here"),
    (errno.ENOTDIR, "/x/last.pt: part of this path is a file, but a folder is wanted"),
    (errno.EEXIST, "/x/last.pt: already exists"),
])
def test_file_system_faults_are_one_line(code, expected):
    assert error_line(OSError(code, "strerror", "/x/last.pt")).startswith(expected)
    assert error_line(ValueError("a bug")) is None  # a bug keeps its traceback


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "maskcls", "--debug", "check", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


# -- argument grammar, and failed starts leave nothing behind ------------------------------------

def test_overrides_go_before_or_after_flags_in_every_command(demo_root, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {backbone: resnet10t, weights: none}\npreprocess: {size: 48}\ntrain: {epochs: 1, batch_size: 16}\n"
                      "data: {num_workers: 0}\ntracking: []\n")
    first = cli_here("train", f"data.root={demo_root}", f"out={tmp_path / 'runs'}", "name=before", "--config", config)
    assert first.returncode == 0, first.stderr
    cv = cli_here("cv", f"data.root={demo_root}", "--folds", "2", f"out={tmp_path / 'runs'}", "name=cvrun", "--config", config)
    assert cv.returncode == 0, cv.stderr
    assert (tmp_path / "runs" / "before" / "best.pt").is_file() and (tmp_path / "runs" / "cvrun" / "oof_probs.npy").is_file()
    stray = cli_here("check", demo_root, "train.lr=1")
    assert stray.returncode == 2 and "unrecognized arguments: train.lr=1" in stray.stderr


def test_a_failed_start_leaves_no_run_or_cv_folder(demo_root, tmp_path):
    for make in (lambda: train(tiny_config(tmp_path / "nowhere", tmp_path / "runs", "name=r"), progress=False),
                 lambda: run_cv(tiny_config(tmp_path / "nowhere", tmp_path / "runs", "name=c"), folds=2, progress=False),
                 lambda: train(tiny_config(demo_root, tmp_path / "runs", "name=n", "train.optimizer=sgd", "train.lr=1e12",
                                           "train.scheduler=none"), progress=False)):
        with pytest.raises(MaskclsError):
            make()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    corrected = train(tiny_config(demo_root, tmp_path / "runs", "name=r", "train.epochs=1"), progress=False)  # the name is free
    assert np.isfinite(corrected["best_macro_f1"])


def test_a_run_killed_before_its_first_epoch_leaves_no_folder(demo_root, tmp_path):
    """`kill` (SIGTERM) cleans up as Ctrl-C does; photos at 160 px keep the first epoch long enough to be killed in."""
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "maskcls", "-q", "train", f"data.root={demo_root}", f"out={runs}", "name=killed",
                                "model.backbone=resnet10t", "model.weights=none", "preprocess.size=160", "train.epochs=1",
                                "data.num_workers=0", "tracking=[]"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (runs / "killed" / "config.yaml").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 130 and "interrupted" in process.stderr.read()
    assert not (runs / "killed").exists()


@pytest.mark.parametrize("command", [["eda", "{data}"], ["evaluate", "{data}/eval/truth.csv", "--truth", "{data}/eval/truth.csv"]])
def test_reports_are_not_replaced_without_force(demo_root, tmp_path, command):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("mine")
    args = [a.format(data=demo_root) for a in command] + ["--out", out]
    one_line_error(cli(*args), f"{out / 'report.html'}: exists; pass --force to replace the report")
    assert (out / "report.html").read_text() == "mine"
    assert cli(*args, "--force").returncode == 0 and (out / "report.html").read_text() != "mine"
