"""The hand's reading (hands/reading.py): drawn hands in 3-D, each way of showing each count, turned, mirrored
and near the line between up and down; the fitted file checked like the model's; the fit reproducible."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT

from signs_resnet.hands import detector, geometry, model_files, reading

# A right hand in centimetres, palm to the camera, wrist at the origin, fingers up (+y): each finger's knuckle
# and its three bones' lengths (index to little).
KNUCKLES = {1: (-2.4, 8.0), 2: (-0.8, 8.3), 3: (0.8, 8.0), 4: (2.3, 7.4)}
BONES = {1: (3.9, 2.3, 1.9), 2: (4.4, 2.7, 2.0), 3: (4.1, 2.6, 2.0), 4: (3.3, 1.9, 1.8)}
# Each finger's three joints' bends, in degrees, towards the palm.
UP, CURLED, ROUND = (5, 5, 5), (85, 100, 60), (35, 55, 35)


def _finger(index: int, bends: tuple[float, float, float]) -> list[np.ndarray]:
    x, y = KNUCKLES[index]
    point, total, points = np.array([x, y, 0.0]), 0.0, []
    points.append(point)
    for length, angle in zip(BONES[index], bends):
        total += np.radians(angle)
        point = point + length * np.array([0.0, np.cos(total), -np.sin(total)])
        points.append(point)
    return points


def drawn_hand(fingers: list[tuple[float, float, float]], thumb: str) -> np.ndarray:
    """21 points in 3-D: the four fingers bent as given (index to little); the thumb "out" (spread, straight),
    "side" (straight, out to the side, square to the index: many people's 5), "folded" (across the palm), "over"
    (over curled fingers, as in a fist) or "o" (its tip on the index's)."""
    world = np.zeros((21, 3))
    for index, bends in enumerate(fingers, 1):
        world[4 * index + 1:4 * index + 5] = _finger(index, bends)
    world[1] = base = np.array([-1.8, 1.8, -0.5])
    if thumb in ("out", "side"):
        direction = np.array([-0.75, 0.66, -0.1] if thumb == "out" else [-1.0, 0.1, -0.1])
        direction /= np.linalg.norm(direction)
        world[2], world[3], world[4] = base + 3.2 * direction, base + 6.0 * direction, base + 8.3 * direction
    elif thumb in ("folded", "over"):
        steps = ([(-1.2, 2.6, -1.0), (1.8, 1.4, -1.4), (1.9, 0.3, -0.6)] if thumb == "folded"
                 else [(-1.0, 2.6, -1.2), (1.5, 1.8, -1.8), (1.8, 0.9, -0.6)])
        for joint, step in zip((2, 3, 4), steps):
            world[joint] = world[joint - 1] + np.array(step)
    else:  # an O
        world[2] = base + np.array([-1.6, 2.4, -1.6])
        world[3] = (world[2] + world[8]) / 2 + np.array([-0.8, 0.0, -0.6])
        world[4] = world[8] + np.array([0.0, -0.3, -0.2])
    return world


def seen(world: np.ndarray, turn: float = 0.0, mirrored: bool = False, scale: float = 20.0):
    """The hand as the landmark model gives it: photo points (the 3-D points turned `turn` degrees in the photo's
    plane, mirrored for a left hand, in pixels) and world points (in metres)."""
    world = world * np.array([-1.0 if mirrored else 1.0, 1.0, 1.0])
    cos, sin = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    xy = world[:, :2] @ np.array([[cos, -sin], [sin, cos]]).T
    points = np.stack([300 + scale * xy[:, 0], 300 - scale * xy[:, 1]], 1)  # the photo's y points down
    return points.astype(np.float32), (world / 100).astype(np.float32)


WAYS = {  # name: (fingers index to little, thumb, count)
    "5": ([UP] * 4, "out", 5), "5, thumb out to the side": ([UP] * 4, "side", 5),
    "4, thumb folded": ([UP] * 4, "folded", 4),
    "3: thumb, index, middle (SIGNS)": ([UP, UP, CURLED, CURLED], "out", 3),
    "3: middle, ring, little": ([CURLED, UP, UP, UP], "over", 3),
    "3: index, middle, ring": ([UP, UP, UP, CURLED], "folded", 3),
    "2": ([UP, UP, CURLED, CURLED], "folded", 2), "1": ([UP, CURLED, CURLED, CURLED], "folded", 1),
    "0: a fist": ([CURLED] * 4, "over", 0), "0: an O": ([ROUND] * 4, "o", 0),
}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("turn, mirrored", [(0, False), (90, False), (0, True), (-135, True)])
def test_every_way_of_showing_a_count_reads_that_count(way, turn, mirrored):
    """Each count however it is shown (any three fingers a 3, a fist and an O a 0), upright, turned, a left hand:
    the same reading, its most probable count the one shown."""
    fingers, thumb, count = WAYS[way]
    upright = reading.finger_reading().read(*seen(drawn_hand(fingers, thumb)))
    given = reading.finger_reading().read(*seen(drawn_hand(fingers, thumb), turn, mirrored, scale=7.5))
    assert given.count == count and max(given.counts) == given.counts[count]
    assert given.counts == pytest.approx(upright.counts, abs=1e-5) and sum(given.counts) == pytest.approx(1)
    held = [i for i, up in enumerate(given.fingers_up) if up >= 0.5]
    assert len(held) == count or given.o >= 0.5


def test_a_finger_bending_crosses_from_up_to_down_once():
    """The index bent a little more each time, the rest of a 5 held: its probability of being up falls steadily
    until it is plainly down (curled further, its tip comes back a little towards its middle joint, still down),
    and the count passes from 5 to 4 once, near half-way to a fist."""
    ups, counts = [], []
    for share in np.linspace(0, 1, 21):
        bends = tuple(u + share * (c - u) for u, c in zip(UP, CURLED))
        given = reading.finger_reading().read(*seen(drawn_hand([bends, UP, UP, UP], "out")))
        ups.append(given.fingers_up[1])
        counts.append(given.count)
    falling = ups[:next(i for i, up in enumerate(ups) if up < 0.2) + 1]
    assert all(a > b for a, b in zip(falling, falling[1:])) and ups[0] > 0.8 and max(ups[len(falling):]) < 0.2
    changes = [i for i in range(1, 21) if counts[i] != counts[i - 1]]
    assert counts[0] == 5 and counts[-1] == 4 and len(changes) == 1 and 3 <= changes[0] <= 17


def test_degenerate_points_have_no_reading():
    flat = np.full((21, 2), 50.0, np.float32)
    assert reading.finger_reading().read(flat, np.zeros((21, 3), np.float32)) is None  # no palm
    assert geometry.Hand(flat, 0.9).reading() is None  # no 3-D points
    points, world = seen(drawn_hand([UP] * 4, "out"))
    assert geometry.Hand(points, 0.9, world).reading().count == 5


def test_the_count_is_the_sum_of_independent_fingers_or_an_o():
    """count_probabilities: an O is 0; otherwise each count is how many fingers are up, whichever they are."""
    up = np.array([[1.0, 1.0, 1.0, 0.0, 0.0], [0.5] * 5, [0.0] * 5])
    counts = reading.count_probabilities(up, np.array([0.0, 0.0, 1.0]))
    assert counts[0] == pytest.approx(np.eye(6)[3]) and counts[2] == pytest.approx(np.eye(6)[0])
    assert counts[1] == pytest.approx(np.array([1, 5, 10, 10, 5, 1]) / 32)  # binomial, any fingers
    assert reading.count_probabilities(up[:1], np.array([0.25]))[0] == pytest.approx([0.25, 0, 0, 0.75, 0, 0])


def test_the_reading_file_is_checked_like_the_models(tmp_path):
    """The shipped file is the one its SHA-256 names; a changed, truncated or missing copy is refused with a
    message saying what to do, never read."""
    shipped = reading.READING_FILE.read_bytes()
    assert reading.load_reading().as_json() == json.loads(shipped)
    changed = json.loads(shipped)
    changed["finger"]["bias"] += 1
    for name, data in (("changed", json.dumps(changed).encode()), ("truncated", shipped[:100])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(reading.ReadingError, match="not the fingers' reading this package was released with"):
            reading.load_reading(tmp_path / name)
    with pytest.raises(reading.ReadingError, match="cannot read"):
        reading.load_reading(tmp_path / "missing.json")
    (tmp_path / "odd.json").write_bytes(b"[]")
    with pytest.raises(reading.ReadingError, match="not a fingers' reading"):
        reading.load_reading(tmp_path / "odd.json", reading.hashlib.sha256(b"[]").hexdigest())


def test_the_reading_names_what_it_was_fitted_with():
    """The fit holds for one pair of hand models and one finder: a change to either without refitting fails."""
    fitted = reading.finger_reading().fitted_with
    assert {name: fitted[name] for name in model_files.SHA256} == model_files.SHA256
    assert fitted["ROOM"] == detector.ROOM and "SIGNS" in fitted["photos"]


@pytest.mark.slow  # the hand finder on 1080 photos
def test_the_shipped_reading_is_what_the_fit_gives_on_signs(signs_dir):
    """benchmarks/finger_count.py fitted again now on the 1080 SIGNS training photos gives the shipped models, to
    a hair (OpenVINO may place a landmark a hair apart on another CPU): the same counts on drawn hands and
    weights within 2%."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import finger_count

    from signs_resnet.data import datasets

    splits = datasets.load_splits(signs_dir, hold_out_validation=False)
    points, world, counts = finger_count.signs_hands(splits.train)
    usable = np.isfinite(points).all((1, 2)) & np.isfinite(world).all((1, 2))
    refit = finger_count.fit_reading(points[usable], world[usable], counts[usable])
    shipped = reading.finger_reading()
    assert usable.sum() > 1000  # 1027 of 1080 hands found
    for part in ("thumb", "finger", "o"):
        for key in ("weights", "mean", "scale"):
            assert getattr(getattr(refit, part), key) == pytest.approx(getattr(getattr(shipped, part), key), rel=0.02)
    for fingers, thumb, count in WAYS.values():
        assert refit.read(*seen(drawn_hand(fingers, thumb))).count == count
