"""The web page's live camera mode, in real headless Chromium whose fake camera plays a video made here from real
webcam frames of hands, against the real server's /stream."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import SHARED, start_server
from PIL import Image
from test_stream import ask, open_stream, wait_for_open_streams
from test_web import ARGS, CHROMIUM
from websockets.sync.client import connect

pytestmark = pytest.mark.slow  # a real browser

SIZE = (640, 480)  # the fake camera's picture: the frames' 400x300 scaled up, a webcam's usual size
SECONDS_EACH, FPS = 3, 5  # each picture held this long; the whole video loops
LAN_HOST = "lan.test"  # resolved to the loopback by the browser, but not "localhost": an insecure page

# Whether the live digit reads `label` and the overlay is painted near most of the hand's `points` (frame pixels,
# mapped as the page maps them: the picture fills the video element as object-fit: contain places it).
SHOWN_WITH_POINTS = """({label, points}) => {
  if (document.getElementById('live-digit').textContent !== label) return false;
  const overlay = document.getElementById('overlay');
  const video = document.getElementById('video');
  if (!overlay.width || !video.videoWidth) return false;
  const shown = Math.min(overlay.width / video.videoWidth, overlay.height / video.videoHeight);
  const left = (overlay.width - video.videoWidth * shown) / 2, top = (overlay.height - video.videoHeight * shown) / 2;
  const scale = video.videoWidth * shown / %d;
  const context = overlay.getContext('2d');
  const hit = points.filter(([x, y]) => context.getImageData(Math.round(left + x * scale) - 4,
      Math.round(top + y * scale) - 4, 9, 9).data.some((value, i) => i %% 4 === 3 && value > 0));
  return hit.length >= 18;
}""" % SIZE[0]
PAINTED = """() => { const overlay = document.getElementById('overlay');
  if (!overlay.width) return 0;
  const data = overlay.getContext('2d').getImageData(0, 0, overlay.width, overlay.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) painted += data[i] > 0;
  return painted; }"""
TRACKS_ENDED = ("window.camera.getTracks().length > 0 && "
                "window.camera.getTracks().every((track) => track.readyState === 'ended')")


def camera_picture(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB").resize(SIZE, Image.BICUBIC)


def yuv420(picture: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y at full size, U and V averaged over 2x2 blocks: the planes of a 4:2:0 video frame."""
    y, u, v = (np.asarray(plane, dtype=np.float32) for plane in picture.convert("YCbCr").split())
    half = lambda plane: plane.reshape(SIZE[1] // 2, 2, SIZE[0] // 2, 2).mean((1, 3))  # noqa: E731
    return tuple(np.clip(plane.round(), 0, 255).astype(np.uint8) for plane in (y, half(u), half(v)))


def as_the_page_sends_it(picture: Image.Image) -> bytes:
    """The picture through the camera's 4:2:0 video and the page's JPEG at quality 0.8: what /stream will get."""
    y, u, v = (Image.fromarray(plane) for plane in yuv420(picture))
    seen = Image.merge("YCbCr", (y, u.resize(SIZE), v.resize(SIZE))).convert("RGB")
    buffer = io.BytesIO()
    seen.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def write_y4m(path: Path, pictures: list[Image.Image], fps: int) -> Path:
    with open(path, "wb") as video:
        video.write(f"YUV4MPEG2 W{SIZE[0]} H{SIZE[1]} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for picture in pictures:
            video.write(b"FRAME\n" + b"".join(plane.tobytes() for plane in yuv420(picture)))
    return path


def answer(server, picture: Image.Image) -> dict:
    response = httpx.post(f"{server.url}/predict", files={"image": as_the_page_sends_it(picture)}, timeout=60)
    return response.json()["results"][0]


def streamed_labels(server, picture: Image.Image, frames: int = 5) -> list[str]:
    """The labels /stream answers to the picture sent `frames` times in a row, as the page sends it: from the
    second frame on, the hand is tracked from the frame before (the landmark model alone, on the square around its
    points), so its points, and a borderline finger's reading, may differ from /predict's a little."""
    frame = as_the_page_sends_it(picture)
    with open_stream(server, "") as stream:
        return [ask(stream, frame, timeout=60)["label"] for _ in range(frames)]


def held_hand(server, count: str) -> tuple[Image.Image, dict]:
    """A real webcam frame of a hand holding up `count` fingers that this server answers as `count`, its hand
    found and read so, by /predict and frame after frame by /stream, as the page will send it (the test does not
    rest on one model's quirks, nor on a hand whose reading tracking tips over)."""
    for path in sorted((SHARED / "real" / "hands_frames" / count).glob("*.jpg"))[:40:4]:
        picture = camera_picture(path)
        result = answer(server, picture)
        if (result["label"] == count and result["hand"]["found"] and result["hand"]["fingers"] == int(count)
                and streamed_labels(server, picture) == [count] * 5):
            return picture, result
    pytest.fail(f"the server answers none of the first frames of {count} fingers as {count}")


@pytest.fixture(scope="module")
def scene(server, tmp_path_factory):
    """The fake camera's video: five fingers, then two, then no hand (a plain grey wall), SECONDS_EACH each; and
    /predict's answers to the two hands."""
    five, five_answer = held_hand(server, "5")
    two, two_answer = held_hand(server, "2")
    wall = Image.new("RGB", SIZE, (128, 124, 118))
    assert answer(server, wall)["hand"]["found"] is False
    pictures = [five] * (SECONDS_EACH * FPS) + [two] * (SECONDS_EACH * FPS) + [wall] * (SECONDS_EACH * FPS)
    video = write_y4m(tmp_path_factory.mktemp("camera") / "hands.y4m", pictures, FPS)
    return video, five_answer, two_answer


@pytest.fixture(scope="module")
def camera(scene):
    """Chromium with its fake camera playing the scene (in a loop) and camera permission granted."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` (make test does) or set SIGNS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    fake_camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                   f"--use-file-for-fake-video-capture={scene[0]}", f"--host-resolver-rules=MAP {LAN_HOST} 127.0.0.1"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS + fake_camera)
        yield browser
        browser.close()


def open_page(camera, url: str, errors: list[str]):
    page = camera.new_page(viewport={"width": 900, "height": 760})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/")
    return page


def test_the_live_number_follows_the_hand_with_its_points_drawn_and_stop_ends_the_stream(camera, scene, server):
    _, five, two = scene
    errors: list[str] = []
    page = open_page(camera, server.url, errors)
    assert page.is_visible("#drop") and not page.is_visible("#live")
    page.click("#use-camera")
    assert not page.is_visible("#drop") and page.is_visible("#video")

    page.wait_for_function(SHOWN_WITH_POINTS, arg={"label": "5", "points": five["hand"]["points"]}, timeout=45_000)
    if os.environ.get("SIGNS_LIVE_SCREENSHOT"):  # docs/live.png: five fingers, their points, the fps
        page.wait_for_function(f"(hand) => /fps/.test(document.getElementById('live-fps').textContent) && "
                               f"({SHOWN_WITH_POINTS})(hand)", arg={"label": "5", "points": five["hand"]["points"]},
                               timeout=45_000)
        page.locator("main").screenshot(path=os.environ["SIGNS_LIVE_SCREENSHOT"])
    page.wait_for_function(SHOWN_WITH_POINTS, arg={"label": "2", "points": two["hand"]["points"]}, timeout=45_000)
    assert re.fullmatch(r"\d+\.\d% ?(sure)?", page.inner_text("#live-confidence").strip())
    assert not page.is_visible("#live-no-hand")
    assert not page.is_visible("#flip")  # one camera (the fake one): nothing to switch to
    page.wait_for_function(f"!document.getElementById('live-no-hand').hidden && ({PAINTED})() === 0", timeout=45_000)
    assert page.inner_text("#live-no-hand") == "no hand" and page.inner_text("#live-digit") == "–"
    fps = re.match(r"([\d.]+) fps", page.inner_text("#live-fps"))
    assert fps and float(fps.group(1)) > 0, page.inner_text("#live-fps")

    wait_for_open_streams(server, 1)
    page.evaluate("window.camera = document.getElementById('video').srcObject")
    assert page.evaluate("window.camera.getVideoTracks()[0].readyState") == "live"
    page.click("#stop")
    wait_for_open_streams(server, 0)
    assert page.evaluate(TRACKS_ENDED)
    assert page.inner_text("#status") == "Camera stopped."
    page.click("#photo-mode")
    assert page.is_visible("#drop") and not page.is_visible("#live")
    assert not errors, errors


def test_leaving_the_page_stops_the_camera_and_the_stream(camera, server):
    errors: list[str] = []
    page = open_page(camera, server.url, errors)
    page.click("#use-camera")
    page.wait_for_function("/fps/.test(document.getElementById('live-fps').textContent)", timeout=45_000)
    page.evaluate("window.camera = document.getElementById('video').srcObject")
    wait_for_open_streams(server, 1)
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide'))")
    wait_for_open_streams(server, 0)
    assert page.evaluate(TRACKS_ENDED)
    assert not errors, errors


def test_live_mode_asks_for_the_api_key_says_when_the_server_is_busy_and_when_it_goes(camera, model_file, tmp_path):
    key = "live-test-key"
    server = start_server(model_file, tmp_path / "server.log", "--engine", "torch-fp32", "--max-batch-size", "4",
                          "--max-streams", "1", env={"SIGNS_API_KEY": key})
    try:
        errors: list[str] = []
        page = open_page(camera, server.url, errors)
        page.click("#use-camera")
        page.wait_for_selector("#key-form", state="visible", timeout=30_000)
        assert "missing API key" in page.inner_text("#status")
        assert page.evaluate("document.getElementById('video').srcObject") is None  # the camera is off meanwhile
        page.fill("#api-key", key)
        page.click("#key-form button")
        page.wait_for_function("/fps/.test(document.getElementById('live-fps').textContent)", timeout=45_000)
        assert not page.is_visible("#key-form")
        page.click("#stop")
        wait_for_open_streams(server, 0)

        # the one stream this server allows is taken
        with connect(server.url.replace("http://", "ws://") + f"/stream?api_key={key}"):
            wait_for_open_streams(server, 1)
            page.click("#use-camera")
            page.wait_for_function("document.getElementById('status').textContent.includes('busy')", timeout=30_000)
        assert page.inner_text("#status") == "Server busy, try again in a moment."
        wait_for_open_streams(server, 0)

        # the server goes away while streaming
        page.click("#use-camera")
        page.wait_for_function("/fps/.test(document.getElementById('live-fps').textContent)", timeout=45_000)
        page.evaluate("window.camera = document.getElementById('video').srcObject")
        server.stop()
        page.wait_for_function("document.getElementById('status').textContent.includes('ended')", timeout=30_000)
        assert page.evaluate(TRACKS_ENDED)
        assert "Use camera" in page.inner_text("#status")
        assert not errors, errors
    finally:
        server.stop()


def test_an_insecure_page_says_the_camera_needs_a_secure_one(camera, server):
    """Served by the same server under a name that is not localhost, over HTTP: browsers give it no camera."""
    errors: list[str] = []
    page = open_page(camera, server.url.replace("127.0.0.1", LAN_HOST), errors)
    assert page.evaluate("window.isSecureContext") is False
    assert not page.is_visible("#insecure")
    page.click("#use-camera")
    assert page.is_visible("#insecure") and "secure" in page.inner_text("#insecure")
    assert "not a secure page" in page.inner_text("#status")
    assert not errors, errors
