"""The O-net tuned on masks drawn over a data set's own bare faces: the drawn masks, the tuning's
memo, the content-addressed store, and the run folders that carry their detector's weights."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from maskcls.checkpoint import load, load_model
from maskcls.data.layout import load_train
from maskcls.errors import MaskclsError
from maskcls.faces import DetectionCache, DetectorSettings, FaceDetector
from maskcls.faces import tune as tuning
from maskcls.faces.masks import draw_mask
from maskcls.faces.mtcnn import onet_network
from maskcls.faces.onet import adopt_onet, carry_onet, load_onet, save_onet, store_dir, weights_name
from maskcls.imageio import read_rgb


def bare_photos(root, count=None):
    images = load_train(root).images
    return list(images.loc[images["mask"] == 2, "file"])[:count]


def test_a_drawn_mask_covers_the_lower_face_and_leaves_the_eyes(wide_root):
    rgb = read_rgb(bare_photos(wide_root, 1)[0])
    face = FaceDetector().main_face(rgb)
    points = np.round(face.landmarks).astype(int)  # the eyes, the nose tip, the mouth's corners

    def patch(image, point):
        x, y = point
        return image[y - 2 : y + 3, x - 2 : x + 3].astype(int)

    mouth = np.round(points[3:5].mean(0)).astype(int)
    worn = draw_mask(rgb, face.box, face.landmarks, np.random.default_rng(0), "worn")
    above = slice(0, points[:2, 1].min() + 1)
    assert np.abs(worn[above].astype(int) - rgb[above]).max() <= 2  # the eyes and all above them stay as they were
    assert np.abs(patch(worn, mouth) - patch(rgb, mouth)).mean() > 5 and np.abs(patch(worn, points[2]) - patch(rgb, points[2])).mean() > 5
    chin = draw_mask(rgb, face.box, face.landmarks, np.random.default_rng(0), "chin")
    assert np.abs(patch(chin, points[2]) - patch(rgb, points[2])).max() <= 2  # on the chin the nose shows
    assert (chin != rgb).any()


def test_onet_is_tuned_once_per_photos_and_settings_and_finds_faces(wide_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    trained = []
    train_onet = tuning.train_onet
    monkeypatch.setattr(tuning, "train_onet", lambda *args, **kw: trained.append(args[3]) or train_onet(*args, **kw))
    photos, small = bare_photos(wide_root), tuning.OnetTuning(photos=4, epochs=1)
    digest = tuning.tuned_onet(photos, DetectorSettings(), small)
    assert trained == [1] and (store_dir() / weights_name(digest)).is_file()
    assert tuning.tuned_onet(list(reversed(photos)), DetectorSettings(), small) == digest and len(trained) == 1  # the memo
    tuned, packaged = load_onet(digest), onet_network().state_dict()
    assert set(tuned) == set(packaged) and any(not torch.equal(tuned[k], packaged[k]) for k in tuned)
    assert tuning.tuned_onet(photos, DetectorSettings(), dataclasses.replace(small, seed=1)) != digest and len(trained) == 2
    tuning.tuned_onet(photos, DetectorSettings(thresholds=(0.5, 0.5, 0.5)), small)
    assert len(trained) == 3  # other detector settings give other truths: tuned anew
    # The tuned network runs in both cascades, and its digest keys the detection cache.
    settings = DetectorSettings(onet=digest)
    rgb = read_rgb(photos[0])
    for cascade in ("onnxruntime", "facenet-pytorch"):
        assert FaceDetector(dataclasses.replace(settings, cascade=cascade)).main_face(rgb).source == "mtcnn"
    assert DetectionCache(settings).key != DetectionCache(DetectorSettings()).key


def test_tuning_leaves_the_global_random_state_alone(wide_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    tuning.tuned_onet(bare_photos(wide_root), DetectorSettings(), tuning.OnetTuning(photos=2, epochs=1))
    assert torch.equal(torch.rand(3), expected)  # a run whose tuning came from the memo trains as one that tuned


def test_the_store_checks_digests_and_says_what_to_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    digest = save_onet(onet_network().state_dict())
    assert save_onet(onet_network().state_dict()) == digest  # content-addressed: the same weights, the same name
    with pytest.raises(MaskclsError, match="settings|digest"):
        DetectorSettings(onet="not-a-digest")
    carry_onet(digest, tmp_path / "run")
    copy = tmp_path / "run" / weights_name(digest)
    assert copy.read_bytes() == (store_dir() / weights_name(digest)).read_bytes()
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "elsewhere"))  # another machine
    with pytest.raises(MaskclsError, match=f"{digest} is not in"):
        load_onet(digest)
    assert load_onet(digest, [tmp_path / "run"]).keys() == onet_network().state_dict().keys()  # a model folder's own copy
    adopt_onet(digest, tmp_path / "run")
    assert (store_dir() / weights_name(digest)).is_file()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / weights_name(digest)).write_bytes(copy.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "third"))
    with pytest.raises(MaskclsError, match="damaged"):
        adopt_onet(digest, damaged)
    with pytest.raises(MaskclsError, match="neither here nor in"):
        adopt_onet(digest, tmp_path)


def test_a_run_carries_its_tuned_onet_to_a_machine_that_lacks_it(cropped_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(next(cropped_run.rglob("best.pt")).parent, run)
    digest = load(run / "best.pt")["preprocess"]["detector"]["onet"]
    assert digest is not None and (run / weights_name(digest)).is_file()  # the demo recipe tunes by default
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "fresh"))
    _, pre, _ = load_model(run / "best.pt")
    assert pre.detector.onet == digest and (store_dir() / weights_name(digest)).is_file()
    (run / weights_name(digest)).unlink()
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "bare"))
    with pytest.raises(MaskclsError, match="copy it from the machine that trained"):
        load_model(run / "best.pt")


def test_a_resumed_run_keeps_the_detector_it_began_with(tmp_path, monkeypatch):
    from maskcls.config import PreprocessConfig
    from maskcls.data.transforms import Preprocess
    from maskcls.train import engine

    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(engine, "tuned_onet", lambda *a, **k: pytest.fail("a resumed run tuned O-net again"))
    digest = save_onet(onet_network().state_dict())
    pre = Preprocess(48, 48, (0.5,) * 3, (0.5,) * 3, "mtcnn", 0.1, DetectorSettings(), "eyes")
    recorded = dataclasses.replace(pre, detector=DetectorSettings(onet=digest)).to_dict()
    resumed = engine.tuned_detector(pre, PreprocessConfig(crop="mtcnn"), None, tmp_path, recorded, False)
    assert resumed.detector.onet == digest
    packaged = engine.tuned_detector(pre, PreprocessConfig(crop="mtcnn", crop_onet="packaged"), None, tmp_path, None, False)
    assert packaged.detector.onet is None


def test_photos_without_a_sure_face_keep_the_packaged_onet_and_say_so(tmp_path, monkeypatch, caplog):
    import cv2

    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    photos = []
    for i in range(2):
        photos.append(tmp_path / f"wall{i}.png")
        cv2.imwrite(str(photos[-1]), np.full((120, 90, 3), 60 + 40 * i, np.uint8))
    with caplog.at_level("WARNING"):
        assert tuning.tuned_onet(photos, DetectorSettings(), tuning.OnetTuning(epochs=1)) is None
    assert "nothing to learn" in caplog.text


def test_fits_starting_together_tune_once(wide_root, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "cache"))
    trained = []
    train_onet = tuning.train_onet
    monkeypatch.setattr(tuning, "train_onet", lambda *args, **kw: trained.append(1) or train_onet(*args, **kw))
    one = tuning.OnetTuning(photos=1, epochs=1)  # one photo is cut in-process: no pool forked from a threaded process
    with ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(lambda _: tuning.tuned_onet(bare_photos(wide_root), DetectorSettings(), one), range(2)))
    assert digests[0] == digests[1] and len(trained) == 1  # the second waited on the lock, then read the memo


def test_some_tuning_chips_are_grey_as_an_infrared_camera_sends_them(wide_root):
    chips = [chip for index, file in enumerate(bare_photos(wide_root, 4))
             for chip, _, _ in tuning.chips_of((DetectorSettings(), file, 0, index))]
    assert chips
    grey = [bool((np.ptp(chip.astype(int), axis=2) == 0).all()) for chip in chips]
    assert 0 < sum(grey) < len(grey)  # some views grey, most in colour
