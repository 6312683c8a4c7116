"""The page in a real browser: Debian's Chromium, headless, driven by Selenium against the real
server (uvicorn on a free loopback port, as `serve()` starts it). A photo goes in through the file
input; the labels the page shows must be the API's answer for the same photo. Without Chromium
or its driver the tests skip and say so (tools/browser-deps.sh installs them)."""
from __future__ import annotations

import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
from test_serve import unmasked_photos

from maskcls.serve.app import prepare

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]
# Chromium's own stand-in camera (a moving test pattern), allowed without a prompt.
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
START_SECONDS = 60
RESULT_SECONDS = 60


def need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"BROWSER TEST SKIPPED: {', '.join(missing)} missing; run `sh tools/browser-deps.sh` (apt: chromium chromium-driver)"
        print(f"\n!!! {reason}", file=sys.stderr, flush=True)
        warnings.warn(reason, stacklevel=2)  # the warnings summary shows it even under -q
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(cropped_run):
    """The real service (uvicorn on a loopback port the OS picks) in a thread of this process,
    which has torch imported already; `serve()` is `prepare()` and then this same run."""
    need_browser()
    server, sock = prepare(cropped_run, port=0, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + START_SECONDS
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def chromium(profile: Path, *flags):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager, which would look for drivers online, is never run.
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))


@pytest.fixture(scope="module")
def bare(server, tmp_path_factory):
    """A fresh headless Chromium with no camera, shared by this file's tests."""
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def wait_for_result(driver) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element("id", "status")
    WebDriverWait(driver, RESULT_SECONDS).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    assert status.get_attribute("data-state") == "done", status.text
    return status.text


def expected_lines(face: dict, index: int) -> list[str]:
    """page.js's labelLines, written again from the API's JSON."""
    heads = [f"{head} {face[head]['label']} {100 * face[head]['probs'][face[head]['label']]:.1f}%" for head in ("mask", "gender", "age")]
    return [f"#{index + 1} {face['class_name']}", " · ".join(heads)]


def shown_faces(driver) -> list[dict]:
    items = driver.find_elements("css selector", "#faces li[data-class-id]")
    return [{"class_id": int(li.get_attribute("data-class-id")), "box": [float(v) for v in li.get_attribute("data-box").split(",")],
             "lines": [span.text for span in li.find_elements("css selector", "span")]} for li in items]


def test_the_page_shows_the_api_answer_for_an_uploaded_photo(server, bare, wide_root):
    from selenium.webdriver.support.ui import WebDriverWait

    photos = unmasked_photos(wide_root)[:6]
    answers = [(p, httpx.post(f"{server}/predict", files={"file": (p.name, p.read_bytes())}, timeout=RESULT_SECONDS).json()) for p in photos]
    photo, answer = next(((p, a) for p, a in answers if a["faces"]), answers[0])
    assert answer["faces"], "no demo photo has a face the detector finds"
    driver = bare
    driver.get(server + "/")
    driver.find_element("id", "file").send_keys(str(photo))
    button = driver.find_element("id", "predict")
    WebDriverWait(driver, RESULT_SECONDS).until(lambda _: button.is_enabled())
    button.click()
    status = wait_for_result(driver)
    faces = answer["faces"]
    assert f"{len(faces)} face" in status
    shown = shown_faces(driver)
    assert [s["class_id"] for s in shown] == [f["class_id"] for f in faces]
    assert [s["box"] for s in shown] == [f["box"] for f in faces]
    assert [s["lines"] for s in shown] == [expected_lines(f, i) for i, f in enumerate(faces)]
    size = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
    assert size == [answer["image"]["width"], answer["image"]["height"]]
    cells = driver.find_elements("css selector", "#probs tbody tr")
    assert len(cells) == len(faces) and "ms" in driver.find_element("id", "latency").text
    # Everything the page loaded came from the service itself.
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert loaded and all(name.startswith(server + "/") for name in loaded), loaded


def test_the_camera_button_is_disabled_without_a_camera_and_a_snapshot_is_predicted_with_one(server, bare, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    bare.get(server + "/")
    camera = bare.find_element("id", "camera")
    WebDriverWait(bare, RESULT_SECONDS).until(lambda _: not camera.is_enabled() or not camera.is_displayed())
    assert "camera" in bare.find_element("id", "camera-note").text.lower()

    driver = chromium(tmp_path / "profile", *FAKE_CAMERA)
    try:
        driver.get(server + "/")
        driver.find_element("id", "camera").click()
        snap = driver.find_element("id", "snap")
        WebDriverWait(driver, RESULT_SECONDS).until(lambda _: snap.is_displayed() and driver.execute_script(
            "return document.getElementById('video').videoWidth > 0;"))
        snap.click()
        assert "Result:" in wait_for_result(driver)
        size = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        video = driver.execute_script("const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight];")
        assert size == video and min(size) > 0  # the snapshot is what the canvas shows
    finally:
        driver.quit()
