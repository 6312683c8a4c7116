"""The face crop: wide demo scenes, detection, the detection cache, the crop command, one crop
shared by training, prediction and serving, and the ONNX export checked against PyTorch."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import cli, tiny_config

from maskcls.data.dataset import PhotoDataset
from maskcls.data.demo import FACE_WIDTH_SHARES
from maskcls.data.transforms import Preprocess
from maskcls.faces import DetectionCache, DetectorSettings, Face, FaceDetector, align_face, crop_face, square_box
from maskcls.faces.crop import CHIP_EYES
from maskcls.faces.detect import centre_face
from maskcls.imageio import read_rgb


def faces_table(split_dir):
    with open(split_dir / "faces.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_wide_scenes_place_the_face_anywhere_at_many_scales(wide_root):
    rows = faces_table(wide_root / "train")
    assert len(rows) == 12 * 7
    first = read_rgb(wide_root / "train" / "images" / rows[0]["path"])
    assert first.shape == (213, 160, 3)  # 4:3 portrait, the competition's proportions
    boxes = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in rows])
    shares = (boxes[:, 2] - boxes[:, 0]) / 160
    assert FACE_WIDTH_SHARES[0] - 0.01 <= shares.min() and shares.max() <= FACE_WIDTH_SHARES[1] + 0.01
    assert shares.max() - shares.min() > 0.1  # not one fixed scale
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert centres.std() > 10  # nor one fixed place
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 160).all()


def test_mtcnn_finds_unmasked_faces_in_wide_scenes(wide_root):
    detector = FaceDetector()
    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "2"]
    hits = 0
    for row in rows:
        face = detector.main_face(read_rgb(wide_root / "train" / "images" / row["path"]))
        hits += face.source == "mtcnn" and iou(face.box, [float(row[k]) for k in ("x0", "y0", "x1", "y1")]) >= 0.5
    assert hits >= len(rows) - 1


def test_the_onnx_cascade_finds_what_facenet_pytorchs_mtcnn_finds(wide_root):
    """Same networks, same steps, another resampling: the boxes differ by a few pixels, never by a bias."""
    from facenet_pytorch import MTCNN

    from maskcls.faces.mtcnn import FacenetMTCNN, MTCNNCascade

    settings = DetectorSettings()
    reference = MTCNN(thresholds=list(settings.thresholds), factor=settings.pyramid_factor, keep_all=True, device="cpu")
    cascade, facenet = MTCNNCascade(), FacenetMTCNN()
    agree, overlaps, edges, points = [], [], [], []
    for row in faces_table(wide_root / "train"):
        rgb = read_rgb(wide_root / "train" / "images" / row["path"])
        reference.min_face_size = int(settings.min_face * min(rgb.shape[:2]))
        boxes, _, landmarks = reference.detect(rgb, landmarks=True)
        ours, scores, our_landmarks = cascade.detect(rgb, reference.min_face_size, settings.thresholds, settings.pyramid_factor)
        agree.append((boxes is None) == (len(ours) == 0))
        if boxes is None or not len(ours):
            continue
        assert ours.shape[1:] == (4,) and our_landmarks.shape[1:] == (5, 2) and 0 < scores.min() and scores.max() <= 1
        if not overlaps:  # what runs recorded before the ONNX cascade are cropped with: facenet-pytorch's boxes exactly
            assert np.array_equal(facenet.detect(rgb, reference.min_face_size, settings.thresholds, settings.pyramid_factor)[0],
                                  boxes.astype(np.float64))
        best, our_best = np.argmax(boxes[:, 2] - boxes[:, 0]), np.argmax(ours[:, 2] - ours[:, 0])
        side = float(boxes[best][2] - boxes[best][0])
        overlaps.append(iou(boxes[best].astype(float), ours[our_best]))
        edges.append((ours[our_best] - boxes[best].astype(float)) / side)
        points.append((our_landmarks[our_best] - landmarks[best].astype(float)) / side)
    assert len(overlaps) >= 30 and np.mean(agree) >= 0.85
    assert np.mean(overlaps) >= 0.85 and np.median(np.abs(edges)) <= 0.05, (np.mean(overlaps), np.median(np.abs(edges)))
    assert np.abs(np.mean(edges, axis=0)).max() <= 0.02 and np.abs(np.mean(points, axis=0)).max() <= 0.02  # no shift, no scaling


@pytest.mark.parametrize("rescue_below", [0.0, 0.95])
def test_the_low_pass_runs_only_where_the_first_is_unsure_and_finds_masked_faces(wide_root, rescue_below):
    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "0"]  # worn masks: the first pass misses most cartoons
    detector = FaceDetector(DetectorSettings(rescue_below=rescue_below))
    hits = {"chain": 0, "without the low pass": 0}
    for row in rows:
        rgb = read_rgb(wide_root / "train" / "images" / row["path"])
        truth = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        first, found = detector.detect(rgb), detector.find(rgb)
        if max((f.score for f in first), default=0.0) > detector.settings.rescue_below:
            assert found == first  # a face the first pass is sure of: no low pass
        without = (first or detector.detect_haar(rgb) or [centre_face(*rgb.shape[:2])])[0]
        hits["chain"] += iou((found[0] if found else without).box, truth) >= 0.5
        hits["without the low pass"] += iou(without.box, truth) >= 0.5
    assert hits["chain"] >= hits["without the low pass"] + len(rows) // 6, hits


def test_the_two_passes_share_pnets_maps_and_find_what_separate_passes_find(wide_root, monkeypatch):
    from maskcls.faces import mtcnn

    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "0"][:8]
    detector = FaceDetector(DetectorSettings(rescue_below=1.0))  # the low pass runs on every photo
    detector.detect(read_rgb(wide_root / "train" / "images" / rows[0]["path"]))
    pnet_runs = []
    real_pyramid = mtcnn._pyramid
    monkeypatch.setattr(mtcnn, "_pyramid", lambda *a: pnet_runs.append(1) or real_pyramid(*a))
    for row in rows:
        rgb = read_rgb(wide_root / "train" / "images" / row["path"])
        pnet_runs.clear()
        found = detector.find(rgb)
        assert len(pnet_runs) == 1  # one pyramid through P-net for both passes
        separate = detector.rank(detector.detect(rgb) + detector._mtcnn_pass(rgb, detector.settings.rescue_thresholds, "mtcnn-low"))
        assert found == (separate or detector.detect_haar(rgb))


def test_refinement_widens_a_box_on_the_upper_face_to_the_face(wide_root):
    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "2"][:6]
    detector, unrefined = FaceDetector(), FaceDetector(DetectorSettings(refine_steps=0))
    for row in rows:
        x0, y0, x1, y1 = truth = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        upper = ((x0 + x1) / 2 - 0.35 * (x1 - x0), y0, (x0 + x1) / 2 + 0.35 * (x1 - x0), y0 + 0.6 * (y1 - y0))  # brow and eyes
        rgb = read_rgb(wide_root / "train" / "images" / row["path"])
        boxes, points, scores = detector.refine(rgb, [upper])
        assert 0 < scores[0] <= 1
        assert iou(boxes[0], truth) >= iou(upper, truth) + 0.15
        bx0, by0, bx1, by1 = boxes[0]  # the eyes O-net saw lie in the upper half of the face it found
        assert all(bx0 <= x <= bx1 and by0 <= y <= (by0 + by1) / 2 for x, y in points[0][:2]), (boxes[0], points[0])
        same, no_points, no_scores = unrefined.refine(rgb, [upper])
        assert np.array_equal(same, np.array([upper])) and no_points is None and no_scores is None


def test_the_main_face_is_the_largest_weighted_by_its_score_and_repeats_go():
    torso = Face((0.0, 200.0, 300.0, 500.0), 0.3, "mtcnn-low")  # a false box on the body: large, and O-net unsure of it
    face = Face((100.0, 50.0, 200.0, 170.0), 0.99, "mtcnn")
    repeat = Face((102.0, 52.0, 203.0, 172.0), 0.98, "mtcnn-low")  # the same face from the low pass
    small = Face((300.0, 40.0, 340.0, 90.0), 0.999, "mtcnn")
    weighted = FaceDetector(DetectorSettings(score_power=3)).rank([torso, repeat, small, face])
    assert weighted == [face, torso, small]
    assert FaceDetector(DetectorSettings(score_power=0)).rank([face, torso, small, repeat]) == [torso, repeat, small]  # the larger of the two


def test_detector_settings_recorded_before_a_step_existed_keep_it_off():
    before = {"detector": "mtcnn", "thresholds": [0.3, 0.4, 0.4], "min_face": 0.12, "pyramid_factor": 0.709}
    settings = DetectorSettings.from_dict(before)
    assert settings.rescue_thresholds is None and settings.refine_steps == 0 and settings.cascade == "facenet-pytorch"
    assert settings.rescue_below == 0 and settings.score_power == 0  # the largest face, the low pass only where nothing was found
    assert settings.haar_downscale is False and DetectorSettings().haar_downscale is True  # Haar at full size, as it ran then
    assert settings.onet_scan is False and DetectorSettings().onet_scan is True
    before_onnx = {k: v for k, v in DetectorSettings().to_dict().items() if k != "cascade"}
    assert DetectorSettings.from_dict(before_onnx) == DetectorSettings(cascade="facenet-pytorch")
    assert DetectorSettings().cascade == "onnxruntime"
    assert DetectorSettings.from_dict(DetectorSettings().to_dict()) == DetectorSettings()
    assert DetectorSettings.from_dict({**before, "rescue_thresholds": None}).rescue_thresholds is None


def test_fallback_chain_says_which_step_found_the_face():
    detector = FaceDetector()
    wall = np.full((200, 150, 3), 128, np.uint8)
    face = detector.main_face(wall)
    assert face.source == "centre" and face.score == 0
    assert detector.detect(wall) == [] and detector.scan(wall) == [] and detector.detect_haar(wall) == []
    x0, y0, x1, y1 = face.box
    assert x1 - x0 == pytest.approx(y1 - y0) and 0 <= x0 and x1 <= 150


def test_where_both_mtcnn_passes_find_nothing_o_net_scans_the_photo_and_finds_the_face(wide_root, monkeypatch):
    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "2"]
    scanning, not_scanning = FaceDetector(), FaceDetector(DetectorSettings(onet_scan=False))
    unrefined = FaceDetector(DetectorSettings(refine_steps=0))  # the scan's own O-net look gives the box and landmarks
    for detector in (scanning, not_scanning, unrefined):
        monkeypatch.setattr(detector, "_mtcnn_pass", lambda *args, **kwargs: [])  # P-net proposes nothing, as on a face it misses
    hits = 0
    for row in rows:
        rgb = read_rgb(wide_root / "train" / "images" / row["path"])
        face = scanning.main_face(rgb)
        assert face.source == "onet-scan", row["path"]
        assert not_scanning.main_face(rgb).source in ("haar", "centre")
        unrefined_face = unrefined.main_face(rgb)
        assert unrefined_face.source == "onet-scan" and len(unrefined_face.landmarks) == 5
        x0, y0, x1, y1 = face.box
        assert len(face.landmarks) == 5 and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)  # so the eyes frame the crop
        hits += iou(face.box, [float(row[k]) for k in ("x0", "y0", "x1", "y1")]) >= 0.5
    assert hits >= len(rows) - 1


def test_haar_runs_where_the_smallest_face_fills_its_window_and_answers_in_the_photos_pixels(wide_root):
    import cv2

    rows = [r for r in faces_table(wide_root / "train") if r["mask_state"] == "2"]
    shrunk, full = FaceDetector(), FaceDetector(DetectorSettings(haar_downscale=False))
    seen = []

    class Spy:  # what the cascade is given
        def __init__(self, cascade):
            self.cascade = cascade

        def getOriginalWindowSize(self):
            return self.cascade.getOriginalWindowSize()

        def detectMultiScale(self, gray, **kwargs):
            seen.append((gray.shape, kwargs["minSize"]))
            return self.cascade.detectMultiScale(gray, **kwargs)

    agree = 0
    for row in rows:
        small = read_rgb(wide_root / "train" / "images" / row["path"])
        large = cv2.resize(small, (384, 512), interpolation=cv2.INTER_LINEAR)  # the competition's size
        faces, reference = shrunk.detect_haar(large), full.detect_haar(large)
        if shrunk._haar is not None and not isinstance(shrunk._haar, Spy):
            shrunk._haar = Spy(shrunk._haar)
        if faces and reference:
            agree += iou(faces[0].box, reference[0].box) >= 0.7
        assert all(-1 <= f.box[0] < f.box[2] <= 385 and -1 <= f.box[1] < f.box[3] <= 513 for f in faces)
        assert shrunk.detect_haar(small) == full.detect_haar(small)  # a 160-px photo's smallest face is below the window already
    assert agree >= 3, agree
    window = min(cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml").getOriginalWindowSize())
    big = [(shape, size) for shape, size in seen if shape[0] > 213]
    assert big and all(shape == (267, 200) and size == (window, window) for shape, size in big), big[:2]


def test_square_box_and_crop_pad_outside_the_photo():
    assert square_box((10, 20, 30, 60), 0.25) == (-10, 10, 50, 70)  # side 40 * 1.5, centred on (20, 40)
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = crop_face(image, (30, 30, 50, 50), 0.5)
    assert crop.shape == (40, 40, 3)
    assert crop[-1, -1].tolist() == [0, 0, 0] and crop[0, 0].tolist() == [200, 200, 200]


def test_the_eye_framing_puts_the_eyes_where_the_face_networks_chips_have_them():
    import cv2

    image = np.zeros((300, 400, 3), np.uint8)
    left, right = (150, 120), (210, 140)  # a tilted face
    cv2.circle(image, left, 3, (255, 0, 0), -1)
    cv2.circle(image, right, 3, (0, 255, 0), -1)
    points = (right, left, (180, 170), (160, 200), (200, 210))  # the eyes in either order
    for margin in (0.0, 0.2):
        chip = align_face(image, points, margin)
        side = chip.shape[0]
        assert chip.shape == (side, side, 3)
        expected = (np.asarray(CHIP_EYES) + margin) / (1 + 2 * margin) * side
        for channel, eye in ((0, expected[0]), (1, expected[1])):
            ys, xs = np.nonzero(chip[..., channel] > 100)
            assert np.hypot(xs.mean() - eye[0], ys.mean() - eye[1]) < 1.0, (margin, channel)
        # the chip keeps the photo's scale: the eyes are as far apart as in the photo
        assert np.hypot(*(expected[1] - expected[0])) == pytest.approx(np.hypot(60, 20), abs=1.0)


def test_the_framing_is_recorded_and_faces_without_landmarks_are_framed_on_their_box():
    from maskcls.errors import MaskclsError

    image = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    eyes = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, "mtcnn", 0.1, DetectorSettings(), "eyes")
    haar = Face((20.0, 30.0, 60.0, 70.0), 1.0, "haar")
    assert np.array_equal(eyes.face_crop(image, haar), crop_face(image, haar.box, 0.1))
    found = Face(haar.box, 0.9, "mtcnn", ((30.0, 45.0), (50.0, 45.0), (40.0, 55.0), (32.0, 62.0), (48.0, 62.0)))
    assert np.array_equal(eyes.face_crop(image, found), align_face(image, found.landmarks, 0.1))
    assert Preprocess.from_dict(eyes.to_dict()) == eyes
    before = {k: v for k, v in eyes.to_dict().items() if k != "crop_align"}  # a run recorded before the eye framing
    assert Preprocess.from_dict(before).crop_align == "box"
    assert "crop_align" not in Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3).to_dict()  # no crop, no framing in the record
    with pytest.raises(MaskclsError, match="crop_align"):
        Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, "mtcnn", 0.1, DetectorSettings(), "nose")


def test_detection_cache_detects_changed_files_and_settings_only(wide_root, tmp_path):
    files = [str(wide_root / "train" / "images" / r["path"]) for r in faces_table(wide_root / "train")[:3]]
    cache = DetectionCache(root=tmp_path / "c")
    first = cache.main_faces(files)
    assert cache.detected == 3
    again = DetectionCache(root=tmp_path / "c")
    assert again.main_faces(files) == first and again.detected == 0
    assert any(face.landmarks for face in first)  # the stored landmarks come back too, so an eye-framed crop needs no detection
    changed = tmp_path / "changed.png"
    changed.write_bytes(open(files[1], "rb").read())  # a renamed copy is the same photo
    renamed = DetectionCache(root=tmp_path / "c")
    renamed.main_faces([str(changed)])
    assert renamed.detected == 0
    import cv2

    cv2.imwrite(str(changed), cv2.flip(cv2.imread(files[1]), 1))  # new content under the same name
    renamed.main_faces([str(changed)])
    assert renamed.detected == 1
    other = DetectionCache(DetectorSettings(thresholds=(0.6, 0.7, 0.7)), root=tmp_path / "c")
    other.main_faces(files)
    assert other.detected == 3


def test_detection_shows_progress_only_when_asked(wide_root, tmp_path, monkeypatch, capfd):
    pre = Preprocess(64, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "mtcnn", 0.3, DetectorSettings(), "eyes")
    files = [str(wide_root / "eval" / "images" / r["path"]) for r in faces_table(wide_root / "eval")[:2]]
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "quiet"))  # nothing detected yet, so detection runs
    PhotoDataset(files, None, pre)
    assert "detect faces" not in capfd.readouterr().err  # `maskcls -q` stays quiet
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "shown"))
    PhotoDataset(files, None, pre, progress=True)
    assert "detect faces" in capfd.readouterr().err


def test_training_prediction_and_serving_see_the_same_crop(wide_root):
    from maskcls.serve.model import Graph

    pre = Preprocess(64, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "mtcnn", 0.3, DetectorSettings(), "eyes")
    files = [str(wide_root / "eval" / "images" / r["path"]) for r in faces_table(wide_root / "eval")[:4]]
    trained = PhotoDataset(files, np.zeros(len(files), int), pre, augment="none")  # a training dataset, augmentation off
    predicted = PhotoDataset(files, None, pre)
    detector = FaceDetector(pre.detector)
    for index, file in enumerate(files):
        x_train, x_predict = trained[index][0], predicted[index][0]
        assert torch.equal(x_train, x_predict)
        rgb = read_rgb(file)
        served = Graph(pre, None).inputs(rgb, [detector.main_face(rgb)])[0]
        assert np.array_equal(served, x_predict.numpy())


def test_crop_command_writes_the_layout_and_a_box_table(wide_root, tmp_path):
    import shutil

    source, out = tmp_path / "eval-only", tmp_path / "cropped"
    shutil.copytree(wide_root / "eval", source / "eval")  # one split keeps the test short; train takes the same path
    from maskcls.data.cropped import write_cropped_copy

    no_train = cli("crop", source, "--out", out)
    assert no_train.returncode == 2 and "pass --onet packaged" in no_train.stderr and no_train.stderr.count("\n") == 1
    assert write_cropped_copy(source, out, margin=0.2, size=64, progress=False, onet="packaged") == {"eval": 6 * 7, "onet": None}
    assert (out / "eval" / "info.csv").read_bytes() == (source / "eval" / "info.csv").read_bytes()
    rows = list(csv.DictReader(open(out / "eval" / "crops.csv")))
    assert len(rows) == 6 * 7 and {r["detector"] for r in rows} <= {"mtcnn", "mtcnn-low", "onet-scan", "haar", "centre"}
    assert all(len(r["landmarks"].split()) == 5 for r in rows if r["detector"] in ("mtcnn", "mtcnn-low", "onet-scan"))
    assert any(r["detector"].startswith("mtcnn") for r in rows)
    assert read_rgb(out / "eval" / "images" / rows[0]["path"]).shape == (64, 64, 3)
    again = cli("crop", source, "--out", out, "--onet", "packaged")
    assert again.returncode == 2 and "not empty" in again.stderr and "--force" in again.stderr and again.stderr.count("\n") == 1
    onto_source = cli("crop", source, "--out", tmp_path, "--force", "--onet", "packaged")  # replacing it would delete the photos being cropped
    assert onto_source.returncode == 2 and "the data set being cropped; write the copy elsewhere" in onto_source.stderr
    assert (source / "eval" / "info.csv").exists()
    replaced = cli("-q", "crop", source, "--out", out, "--size", "32", "--force", "--onet", "packaged")
    assert replaced.returncode == 0, replaced.stderr
    assert read_rgb(out / "eval" / "images" / rows[0]["path"]).shape == (32, 32, 3)
    assert not (tmp_path / "cropped.partial").exists()


def test_the_crop_command_detects_with_the_o_net_a_fit_tunes(wide_root, tmp_path):
    from maskcls.data.layout import load_train
    from maskcls.faces.tune import OnetTuning, tuned_onet

    images = load_train(wide_root).images
    expected = tuned_onet(list(images.loc[images["mask"] == 2, "file"]), DetectorSettings(), OnetTuning())
    result = cli("-q", "crop", wide_root, "--out", tmp_path / "cropped", "--size", "32")
    assert result.returncode == 0, result.stderr
    assert f"O-net: tuned {expected}" in result.stdout  # the same tuning a fit on this data makes, found in the memo


def test_an_interrupted_crop_leaves_no_half_copy(wide_root, tmp_path, monkeypatch):
    import shutil

    from maskcls.data import cropped

    source, out = tmp_path / "eval-only", tmp_path / "cropped"
    shutil.copytree(wide_root / "eval", source / "eval")
    calls = []

    def failing_read(path):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(path)
        return read_rgb(path)

    monkeypatch.setattr(cropped, "read_rgb", failing_read)
    with pytest.raises(KeyboardInterrupt):
        cropped.write_cropped_copy(source, out, size=32, progress=False, onet="packaged")
    assert not out.exists() and not (tmp_path / "cropped.partial").exists()
    monkeypatch.setattr(cropped, "read_rgb", read_rgb)
    assert cropped.write_cropped_copy(source, out, size=32, progress=False, onet="packaged") == {"eval": 6 * 7, "onet": None}  # no --force


def test_crop_is_recorded_in_the_run_and_checked_in_the_config(wide_root, tmp_path):
    from maskcls.config import load_config
    from maskcls.errors import MaskclsError

    with pytest.raises(MaskclsError, match="crop_thresholds"):
        load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_thresholds=[0.5, 1.5, 0.5]"])
    with pytest.raises(MaskclsError, match="crop_rescue_thresholds"):
        load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_rescue_thresholds=[0, 0.1, 0.1]"])
    with pytest.raises(MaskclsError, match="crop_refine_steps"):
        load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_refine_steps=9"])
    off = load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_rescue_thresholds=null", "preprocess.crop_refine_steps=0"])
    assert Preprocess.from_config(off.preprocess, (0.5,) * 3, (0.5,) * 3).detector == DetectorSettings(rescue_thresholds=None, refine_steps=0)
    facenet = load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_cascade=facenet-pytorch"])
    assert Preprocess.from_config(facenet.preprocess, (0.5,) * 3, (0.5,) * 3).detector.cascade == "facenet-pytorch"
    with pytest.raises(MaskclsError, match="crop_cascade"):
        load_config(None, ["preprocess.crop=mtcnn", "preprocess.crop_cascade=dlib"])
    old = Preprocess.from_dict({"height": 64, "width": 64, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert old.crop == "none" and old.face_crop(np.zeros((9, 9, 3), np.uint8), None).shape == (9, 9, 3)
    cfg = tiny_config(wide_root, tmp_path, "preprocess.crop=mtcnn", "preprocess.crop_margin=0.3")
    from maskcls.models import build_model

    _, pre = build_model(cfg.model, cfg.preprocess)
    assert Preprocess.from_dict(pre.to_dict()) == pre and pre.crop_margin == 0.3 and pre.detector == DetectorSettings()
    assert pre.crop_align == "eyes"  # the default framing


def test_persons_are_grouped_by_the_face_crop_even_at_the_photos_edge(wide_root, tmp_path):
    import cv2

    from maskcls.faces import Face
    from maskcls.infer.persons import person_embedding

    photo = tmp_path / "edge.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8))
    at_edge = Face((30.0, -60.0, 60.0, -20.0), 0.9, "mtcnn")  # a box above the frame: only padding over the face
    assert np.abs(person_embedding(photo, face=at_edge)).sum() > 0
    inside = Face((20.0, 40.0, 70.0, 100.0), 0.9, "mtcnn")
    assert not np.array_equal(person_embedding(photo, face=inside), person_embedding(photo))


def test_wide_photos_fit_a_projection_of_the_faces_eye_band(wide_root):
    from maskcls.data.layout import load_eval
    from maskcls.errors import MaskclsError
    from maskcls.infer.persons import PERSON_BAND_THUMB, main_faces, person_groups, train_person_projection

    cropping = [{"crop": "mtcnn", "detector": DetectorSettings().to_dict()}]
    projection = train_person_projection(wide_root, cropping)
    width, height = PERSON_BAND_THUMB
    assert projection.fits("eye-band") and projection.persons == 12
    assert projection.directions.shape == (width * height * 3, 11)
    files = load_eval(wide_root / "eval").files
    groups = person_groups(files, faces=main_faces(cropping, files), projection=projection)
    assert len(np.unique(groups)) == round(len(files) / 7)
    with pytest.raises(MaskclsError, match="fitted on 'eye-band' embeddings, given 'photo-top'"):
        person_groups(files, projection=projection)  # tight-photo grouping on a projection of faces
