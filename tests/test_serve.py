"""The web service (maskcls/serve/app.py) through FastAPI's TestClient, over the suite's tiny run:
photos of each format, no face, two faces, bad uploads (not an image, cut short, too large, a
decompression bomb, too small), concurrent requests, and the other routes."""
from __future__ import annotations

import io
import random
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maskcls.errors import MaskclsError
from maskcls.imageio import read_rgb
from maskcls.labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, class_name, decode
from maskcls.serve import app as service
from maskcls.serve.app import create_app, listen

HEADS = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}


def unmasked_photos(wide_root: Path) -> list[Path]:
    """The unmasked photo of each person in the suite's wide demo scenes (faces MTCNN finds)."""
    return sorted((wide_root / "train" / "images").glob("*/normal.*"))


def encoded(rgb: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, fmt, **options)
    return out.getvalue()


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written row by row: a 20000x20000 one is ~50 KB
    and built without ever holding its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # filter byte, then 8 pixels a byte
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def post(client, data: bytes, name: str = "photo.jpg"):
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")})


def faces_of(answer: dict) -> list[dict]:
    return answer["faces"]


@pytest.fixture(scope="session")
def model(cropped_run):
    """The suite's tiny run on MTCNN face crops (conftest), served with PyTorch."""
    from maskcls.serve.model import ServedModel

    return ServedModel.load(cropped_run)


@pytest.fixture(scope="session")
def client(model):
    return TestClient(create_app(model))


@pytest.fixture(scope="session")
def photos(model, wide_root):
    """Named test photos as (bytes, RGB pixels): a face, two faces, a wall, and every demo photo."""
    files = unmasked_photos(wide_root)[:8]
    with_face = [f for f in files if model.predict(read_rgb(f))["faces"]]
    assert with_face, f"the detector found no face in any of {len(files)} unmasked demo photos"
    face = read_rgb(with_face[0])
    height, width = face.shape[:2]
    small = np.asarray(Image.fromarray(face).resize((width * 2 // 3, height * 2 // 3)))
    two = np.full((height, width + small.shape[1], 3), 200, np.uint8)
    two[:, :width], two[: small.shape[0], width:] = face, small  # the larger face on the left
    wall = np.empty_like(face)
    wall[:] = np.linspace(170, 210, width, dtype=np.uint8)[None, :, None]  # a plain, lit wall
    named = {"face": (with_face[0].read_bytes(), face), "two": (encoded(two), two), "wall": (encoded(wall), wall)}
    return named | {f"demo{i}": (f.read_bytes(), read_rgb(f)) for i, f in enumerate(files)}


def test_a_face_photo_gets_every_field(client, model, photos):
    data, rgb = photos["face"]
    height, width = rgb.shape[:2]
    response = post(client, data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["image"] == {"width": width, "height": height}
    latency = answer["latency_ms"]
    assert set(latency) == {"decode", "detect", "classify", "total"} and min(latency.values()) >= 0
    assert latency["total"] >= latency["decode"] + latency["detect"] + latency["classify"] - 0.5
    assert answer["faces"], answer
    for face in answer["faces"]:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert face["detector"] in ("mtcnn", "mtcnn-low", "onet-scan", "haar") and 0 < face["score"] <= 1
        assert 0 <= face["class_id"] < NUM_CLASSES and face["class_name"] == class_name(face["class_id"])
        for (head, names), index in zip(HEADS.items(), decode(face["class_id"]), strict=True):
            assert face[head]["label"] == names[index]
            assert list(face[head]["probs"]) == list(names) and sum(face[head]["probs"].values()) == pytest.approx(1, abs=2e-3)
    assert faces_of(answer) == model.predict(rgb)["faces"]  # the service decodes as read_rgb does


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {})])
def test_every_lossless_format_gives_the_same_answer(client, model, photos, fmt, options):
    _, rgb = photos["face"]
    response = post(client, encoded(rgb, fmt, **options), name="photo")
    assert response.status_code == 200, response.text
    assert faces_of(response.json()) == model.predict(rgb)["faces"]


def test_exif_orientation_is_applied_as_a_browser_shows_the_photo(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    response = post(client, encoded(np.full((30, 60, 3), 90, np.uint8), "JPEG", exif=exif.tobytes()))
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 30, "height": 60}


def test_a_plain_wall_has_no_face(client, photos):
    response = post(client, photos["wall"][0], "wall.png")
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == []


def test_two_faces_side_by_side_come_largest_first(client, photos):
    width = photos["face"][1].shape[1]
    response = post(client, photos["two"][0], "two.png")
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) >= 2, faces
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    left, right = faces[0]["box"], [f["box"] for f in faces if f["box"][0] >= width]
    assert left[2] <= width + 1 and right, faces  # the full-size face is on the left, another on the right


@pytest.mark.parametrize("data, status, words", [
    (b"this is a text file, not a photo", 415, "not a JPEG, PNG, WebP or BMP"),
    (b"", 400, "empty"),
    (b"GIF89a" + bytes(64), 415, "not a JPEG"),
])
def test_what_is_not_a_photo_is_one_clear_line(client, data, status, words):
    response = post(client, data, "notes.txt")
    assert response.status_code == status and words in response.json()["detail"], response.text


def test_a_gif_and_a_cut_short_jpeg_are_refused(client, photos):
    rgb = photos["face"][1]
    assert post(client, encoded(rgb, "GIF")).status_code == 415
    jpeg = encoded(rgb, "JPEG")
    response = post(client, jpeg[: len(jpeg) // 2])
    assert response.status_code == 400 and "truncated JPEG" in response.json()["detail"]


def test_the_upload_must_be_a_form_with_a_file_field(client, photos):
    raw = client.post("/predict", content=photos["face"][0], headers={"content-type": "image/jpeg"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["detail"]
    other = client.post("/predict", files={"photo": ("a.jpg", photos["face"][0])})
    assert other.status_code == 400 and "no form field `file`" in other.json()["detail"]


def test_an_upload_over_the_cap_is_413_whether_or_not_it_says_its_length(model, photos):
    small = TestClient(create_app(model, max_upload_mb=0.05))
    big = encoded(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))  # ~120 KB of noise
    assert len(big) > 0.05 * (1 << 20) + service.FORM_OVERHEAD
    response = post(small, big)
    assert response.status_code == 413 and "0.05 MB limit" in response.json()["detail"]
    boundary = "maskcls-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()
    chunked = small.post("/predict", content=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})  # no Content-Length: counted while read
    assert chunked.status_code == 413, chunked.text
    assert post(small, photos["wall"][0]).status_code == 200  # under the cap: served


def test_the_default_cap_is_10_mb(client):
    response = post(client, b"\xff\xd8" + bytes(10 * (1 << 20)))
    assert response.status_code == 413 and "10 MB limit" in response.json()["detail"]


@pytest.mark.parametrize("width, height, words", [(20000, 20000, "pixels than"), (8000, 6000, "48.0 MP, over the 40 MP limit")])
def test_a_decompression_bomb_is_refused_from_its_header(client, photos, monkeypatch, width, height, words):
    bomb = bilevel_png(width, height)
    assert len(bomb) < 200_000
    decoded = []
    monkeypatch.setattr(service.cv2, "imdecode", lambda *a: decoded.append(a))
    response = post(client, bomb, "bomb.png")
    assert response.status_code == 413 and words in response.json()["detail"], response.text
    assert decoded == []  # refused before a pixel was unpacked
    monkeypatch.undo()
    assert post(client, photos["wall"][0]).status_code == 200  # the service is still up


def test_a_photo_too_small_for_a_face_is_400_and_the_service_goes_on(client, photos):
    response = post(client, encoded(np.zeros((5, 7, 3), np.uint8)))
    assert response.status_code == 400 and "too small" in response.json()["detail"]
    assert post(client, photos["wall"][0]).status_code == 200


def test_concurrent_requests_each_get_their_own_answer(client, photos):
    alone = {name: faces_of(post(client, data).json()) for name, (data, _) in photos.items()}
    assert len({repr(a) for a in alone.values()}) >= 3, "too few different answers to tell mixed ones apart"
    order = [name for name in photos for _ in range(2)]
    random.Random(0).shuffle(order)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda name: (name, post(client, photos[name][0])), order))
    for name, response in answers:
        assert response.status_code == 200, response.text
        assert faces_of(response.json()) == alone[name], name


def test_health_version_docs_and_the_page(client, model):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/version").json()
    assert info["model_id"] == model.info["model_id"] and info["backend"] == "torch" and info["int8"] is False
    assert info["members"] == model.info["members"] and info["labels"] == [class_name(c) for c in range(NUM_CLASSES)]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/swagger/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert client.get("/swagger/swagger-ui-bundle.js").status_code == 200  # served here: the docs work offline
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    page = client.get("/")
    assert page.status_code == 200 and 'id="faces"' in page.text and 'id="status"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "page.js", "page.css"):
        text = client.get(f"/static/{name}").text if name != "index.html" else page.text
        assert "://" not in text, f"{name} names another site; the page must work offline"


def test_a_run_is_served_in_the_views_asked_for(cropped_run, model, photos):
    from maskcls.cli import TTA_CHOICES
    from maskcls.infer.runtime import TTA_PRESETS
    from maskcls.serve.model import ServedModel

    assert TTA_CHOICES == TTA_PRESETS  # the CLI's copy, kept so that --help needs no torch
    single = ServedModel.load(cropped_run, tta="none")
    assert model.info["tta"] == "hflip" and single.info["tta"] == "none"
    rgb = photos["face"][1]
    crops = single.members[0][0].inputs(rgb, single.detector.find(rgb))
    one_view = single.members[0][0].run
    both = (one_view(crops) + one_view(np.ascontiguousarray(crops[..., ::-1]))) / 2
    assert np.allclose(model.members[0][0].run(crops), both, atol=1e-5) and not np.allclose(one_view(crops), both, atol=1e-5)
    with pytest.raises(MaskclsError, match="tta='sideways': choose one of none, hflip, multiscale"):
        ServedModel.load(cropped_run, tta="sideways")


def test_the_service_refuses_bad_settings_and_a_taken_port(tmp_path):
    with pytest.raises(MaskclsError, match="max-upload-mb"):
        create_app(object(), max_upload_mb=0)
    with pytest.raises(MaskclsError, match="not found"):
        create_app(tmp_path / "no-model")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(MaskclsError, match="cannot listen there"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_prepare_listens_on_loopback_by_default_and_says_where(cropped_run, capsys):
    import threading
    import time

    import httpx

    server, sock = service.prepare(cropped_run, port=0, max_upload_mb=3, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        assert f"at http://127.0.0.1:{port}/" in capsys.readouterr().out and server.config.app.state.model.info["backend"] == "torch"
        thread.start()
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        with httpx.Client() as session:  # keeps its connection open while the server's side is looked at
            assert session.get(f"http://127.0.0.1:{port}/health").status_code == 200
            accepted = [c.transport.get_extra_info("socket") for c in server.server_state.connections]
            # Nagle's algorithm off on every connection: with it on, each answer waited out the client's delayed ACK.
            assert accepted and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted)
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join(10)
        sock.close()
