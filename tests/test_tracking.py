"""A stream's hand tracked from frame to frame (hands.detector: the landmark model alone where the last frame's
hand was) and its shown answer (smoothing.py), against the real server with a real WebSocket client and real
webcam frames; the rule itself in test_smoothing.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import SHARED, start_server
from PIL import Image
from test_stream import ask, closed_with, metrics, open_stream, wait_for_open_streams

from signs_resnet.hands import detector
from signs_resnet.smoothing import HOLD_FRAMES, ShownAnswer

FRAME = SHARED / "real" / "hands_frames" / "3" / "1528664299.56_pic00046.jpg"  # a 400x300 webcam frame, a hand
WALL = (128, 124, 118)  # a plain grey wall: no hand
STEP = (-32, -12)  # the hand's move from one frame of the sequence to the next, in pixels


# --- the hand finder, in process -------------------------------------------------------------------


def camera_frame(step: int = 0) -> Image.Image:
    """A 640x480 window on the webcam frame enlarged to 800x600, moved so that the hand moves by STEP per step."""
    big = Image.open(FRAME).convert("RGB").resize((800, 600), Image.Resampling.BICUBIC)
    left, top = -STEP[0] * step, -STEP[1] * step
    return big.crop((left, top, left + 640, top + 480))


def jpeg(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_the_finder_tracks_a_hand_from_its_last_points_and_detects_it_when_it_is_not_there():
    finder = detector.finder()
    still = camera_frame()
    detected = finder.find(still)
    assert detected is not None and not detected.tracked
    tracked = finder.find(still, detected.points)
    assert tracked is not None and tracked.tracked
    # the same hand: its points within a few pixels of the palm detector's, the same fingers read
    size = max(np.ptp(detected.points, axis=0))
    assert np.abs(tracked.points - detected.points).max() < 0.1 * size
    assert tracked.reading().count == detected.reading().count
    # last seen at the far left: nothing there, so the palm detector looks, and finds it where it is
    elsewhere = finder.find(still, detected.points - np.array([400, 0], np.float32))
    assert elsewhere is not None and not elsewhere.tracked
    assert np.abs(elsewhere.points - detected.points).max() < 0.1 * size
    assert finder.find(Image.new("RGB", (640, 480), WALL), detected.points) is None  # gone: no hand at all


@pytest.mark.parametrize("points", [np.full((21, 2), 50.0), np.full((21, 2), np.nan), np.zeros((5, 2)),
                                    np.zeros(42)], ids=["one place", "nan", "5 points", "flat"])
def test_points_that_give_no_square_are_no_region(points):
    assert detector.region_from_points(points) is None


def test_the_square_from_points_is_turned_by_the_wrist_to_the_knuckles():
    """An upright hand's square stands straight; the same hand turned a quarter turn turns the square with it."""
    finder = detector.finder()
    hand = finder.find(camera_frame())
    centre, side, angle = detector.region_from_points(hand.points)
    assert abs(angle) < 0.6 and side > 1.5 * np.ptp(hand.points[:, 0])  # a hand held up; the square around it
    middle = hand.points.mean(0)
    turned = (hand.points - middle) @ np.array([[0, 1], [-1, 0]], np.float32) + middle  # 90 degrees clockwise
    turned_centre, turned_side, turned_angle = detector.region_from_points(turned)
    assert turned_angle == pytest.approx(angle + np.pi / 2, abs=1e-4) and turned_side == pytest.approx(side, rel=1e-4)
    assert np.allclose(turned_centre - middle, np.array([[0, 1], [-1, 0]]).T @ (centre - middle), atol=1e-3)


# --- /stream ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    server = start_server(model_file, tmp_path_factory.mktemp("tracking") / "server.log", "--engine", "torch-fp32",
                          "--max-batch-size", "4")
    yield server
    server.stop()


def answers_to(stream, photos: list[bytes]) -> list[dict]:
    return [ask(stream, photo, timeout=60) for photo in photos]


@pytest.mark.slow  # a server of its own
def test_a_moving_hand_is_tracked_then_lost_when_it_leaves_and_detected_again(server):
    moving = [camera_frame(step) for step in range(6)]
    wall = Image.new("RGB", (640, 480), WALL)
    photos = [jpeg(picture) for picture in moving + [wall] * HOLD_FRAMES + [moving[0]]]
    with open_stream(server, "") as stream:
        answers = answers_to(stream, photos)
    assert [answer["frame"] for answer in answers] == list(range(1, len(photos) + 1))
    hands = answers[:len(moving)]
    assert all(answer["hand"]["found"] for answer in hands)
    # the first frame's hand is detected; each next one is found where the last one was, without the palm detector
    assert [answer["tracked"] for answer in hands] == [False] + [True] * (len(moving) - 1)
    first = np.array(hands[0]["hand"]["points"])
    for step, answer in enumerate(hands):  # the points follow the hand
        assert np.abs(np.array(answer["hand"]["points"]) - first - np.array(STEP) * step).mean() < 6, step
    gone, back = answers[len(moving):-1], answers[-1]
    assert all(not answer["hand"]["found"] and answer["tracked"] is False for answer in gone)
    assert back["hand"]["found"] and back["tracked"] is False  # lost: the palm detector looks again
    # the shown label is the rule's on the frames' own labels (no hand: None)
    replay = ShownAnswer()
    assert [answer["shown"] for answer in answers] == [
        replay.update(answer["label"] if answer["hand"]["found"] else None) for answer in answers]
    assert answers[len(moving) + 1]["shown"] is not None and gone[-1]["shown"] is None  # gone for HOLD_FRAMES frames


@pytest.mark.slow  # a server of its own
def test_track_0_answers_every_frame_as_predict_does(server):
    photos = [jpeg(camera_frame(step)) for step in (0, 1)]
    with server.client() as client:
        expected = [client.post("/predict", files={"image": ("frame.jpg", photo, "image/jpeg")}).json()["results"][0]
                    for photo in photos]
    with open_stream(server, "?track=0") as stream:
        answers = answers_to(stream, photos)
    assert [answer["tracked"] for answer in answers] == [False, False]
    for answer, result in zip(answers, expected):
        assert (answer["label"], answer["hand"]) == (result["label"], result["hand"])
        assert answer["probability"] == pytest.approx(result["probability"], abs=1e-4)


@pytest.mark.parametrize("query", ["?track=maybe", "?track=", "?track=" + "%E2%82%AC" * 50],
                         ids=["word", "empty", "long, not ASCII"])
@pytest.mark.slow  # a server of its own
def test_a_bad_track_parameter_closes_the_stream_saying_why(server, query):
    counter = 'signs_streams_refused_total{reason="query"}'
    before = metrics(server).get(counter, 0)
    with open_stream(server, query) as stream:
        code, reason = closed_with(stream)
    assert code == 1008 and "?track= takes 1 or 0" in reason
    wait_for_open_streams(server, 0)
    assert metrics(server)[counter] == before + 1


@pytest.mark.slow  # a server of its own
def test_a_bad_frame_leaves_the_tracked_hand_and_the_shown_label_as_they_were(server):
    photos = [jpeg(camera_frame(step)) for step in range(4)]
    with open_stream(server, "") as stream:
        held = answers_to(stream, photos[:3])
        broken = answers_to(stream, [b"not an image"])[0]
        after = answers_to(stream, photos[3:])[0]
    assert "error" in broken and held[-1]["shown"] is not None
    assert after["tracked"] is True and after["shown"] == held[-1]["shown"]


@pytest.mark.slow  # a server of its own
def test_a_large_photo_decoded_at_reduced_size_is_tracked_in_its_own_pixels(server):
    """A 1920x1440 JPEG is decoded at half size (its draft mode): the last frame's points go in and come out in
    the photo's own pixels."""
    def large(step: int) -> bytes:
        return jpeg(camera_frame(step).resize((1920, 1440), Image.Resampling.BICUBIC))

    with open_stream(server, "") as stream:
        first, second = answers_to(stream, [large(0), large(1)])
    assert first["hand"]["found"] and second["tracked"] is True
    moved = np.array(second["hand"]["points"]) - np.array(first["hand"]["points"])
    assert np.abs(moved - np.array(STEP) * 3).mean() < 18  # the 640x480 step, three times larger
