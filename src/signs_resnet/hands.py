"""Finding the hand in a photo, so that the network reads the hand and not the room around it (issue 24).

The network reads 64x64 pixels. In a webcam frame the hand is about a tenth of the picture, some 20 pixels
wide once the frame is resized, and the network answers from the room. `find_hand` locates it with
MediaPipe's hand models (Apache-2.0; `fetch_hand_models` takes them from PyPI at set-up into `models/`, and
they are checked by SHA-256 whenever loaded), run on OpenVINO:
the palm detector finds the palm, the landmark model then places the hand's 21 points. `Hand.square` frames
the hand as a square a little larger than those points (docs/robustness.md, "Finding the hand"), and
`Hand.silhouette` draws the hand's shape from them, so that the room around it can be painted out
(docs/robustness.md, "Cutting the hand out").

These models only say where the hand is; the answer is the ResNet50's, trained on SIGNS alone.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MODELS = Path(__file__).resolve().parent / "models"  # the two .tflite files are fetched, not in git
PALM_MODEL = MODELS / "palm_detection_full.tflite"
LANDMARK_MODEL = MODELS / "hand_landmark_full.tflite"
SHA256 = {PALM_MODEL.name: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
          LANDMARK_MODEL.name: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"}
# Where they are published: this wheel of MediaPipe on PyPI (later ones no longer carry them), any platform's
# copy holding the same files; only the two files are taken from it, never installed.
WHEEL = ["mediapipe==0.10.21", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311"]
WHEEL_MEMBERS = {PALM_MODEL.name: "mediapipe/modules/palm_detection/palm_detection_full.tflite",
                 LANDMARK_MODEL.name: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}

PALM_INPUT = 192  # the palm detector's square input, RGB in [0, 1]
LANDMARK_INPUT = 224  # the landmark model's
# MediaPipe's own settings: a palm counts from a score of 0.5; the landmark model reads a square 2.6 times
# the palm's side, moved half a side towards the fingers and turned so that they point up.
MIN_PALM_SCORE = 0.5
MIN_PRESENCE = 0.5
PALM_TO_HAND_SCALE, PALM_TO_HAND_SHIFT = 2.6, 0.5
NMS_OVERLAP = 0.3
# The square the classifier reads: this many times the long side of the hand's points, around their centre.
# Chosen with the hold-out model on val_signs photos and measured on the real sets (docs/robustness.md,
# "Finding the hand").
FRAMING = 1.5
# The hand's bones, as pairs of MediaPipe's landmarks (the wrist is 0; each finger four points from its
# knuckle, the thumb 1-4 ... the little finger 17-20), and the palm's outline.
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))
PALM = (0, 1, 5, 9, 13, 17)
KNUCKLES = (5, 9, 13, 17)  # the four fingers' knuckles: their spacing is a finger's width
# The forearm below the wrist, as SIGNS photos show it: this many palm widths long, and wide.
ARM_LENGTH, ARM_WIDTH = 4.0, 0.9
# The least finger and palm widths, as shares of the palm's length (wrist to middle knuckle): below all but
# the narrowest front-on SIGNS hands, above a fist's (docs/robustness.md, "Cutting the hand out").
MIN_FINGER, MIN_PALM = 0.2, 0.6
# A finger is held out when its tip is this many times farther from the wrist than its middle joint; the thumb
# when its tip is this many palm lengths (wrist to middle knuckle) from the palm's centre. Fitted to the 1080
# SIGNS training photos enlarged 4x: `python benchmarks/finger_count.py` (docs/accuracy.md, "The hand's count").
FINGER_OUT, THUMB_OUT = 1.22, 0.80
FINGER_JOINTS = ((6, 8), (10, 12), (14, 16), (18, 20))  # each finger's middle joint and tip
PALM_CENTRE = (0, 5, 9, 13, 17)  # the palm's centre: the mean of the wrist and the four knuckles
# How often a SIGNS hand of each class shows each count (Hand.fingers) from 0 to 5, one added to every cell so
# that no count rules a class out: an answer weighs the network's probabilities by it (LoadedModel.posterior).
# Fitted with the thresholds above, on the same photos, by `python benchmarks/finger_count.py`
# (docs/accuracy.md, "The hand's count").
COUNT_LIKELIHOOD = {  # class: P(count 0, 1, ..., 5 | class)
    "0": (0.338, 0.450, 0.119, 0.031, 0.037, 0.025),
    "1": (0.006, 0.803, 0.139, 0.029, 0.017, 0.006),
    "2": (0.007, 0.026, 0.804, 0.111, 0.026, 0.026),
    "3": (0.009, 0.009, 0.017, 0.896, 0.026, 0.043),
    "4": (0.007, 0.007, 0.007, 0.036, 0.871, 0.071),
    "5": (0.005, 0.005, 0.005, 0.005, 0.163, 0.815),
}


def finger_ratios(points: np.ndarray) -> np.ndarray:
    """For hands' landmarks (K x 21 x 2), the five ratios that say whether each finger is held out (K x 5): the
    thumb's tip's distance from the palm's centre over the palm's length (wrist to middle knuckle), then each
    finger's tip's distance from the wrist over its middle joint's. NaN where a length is zero."""
    from_wrist = np.linalg.norm(points - points[:, :1], axis=-1)  # K x 21
    lengths = np.where(from_wrist > 1e-6, from_wrist, np.nan)  # the denominators: NaN, not a division by zero
    centre = points[:, list(PALM_CENTRE)].mean(1)
    thumb = np.linalg.norm(points[:, 4] - centre, axis=-1) / lengths[:, 9]
    fingers = [from_wrist[:, tip] / lengths[:, joint] for joint, tip in FINGER_JOINTS]
    return np.stack([thumb, *fingers], 1)


@dataclass(frozen=True)
class Hand:
    """A hand found in a photo: its 21 landmarks (x, y in the photo's pixels, MediaPipe's order: the wrist
    first, the middle finger's knuckle ninth) and how sure the models are (palm score x hand presence)."""

    points: np.ndarray
    score: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The landmarks' bounding box: left, top, right, bottom."""
        (left, top), (right, bottom) = self.points.min(0), self.points.max(0)
        return float(left), float(top), float(right), float(bottom)

    def square(self) -> tuple[int, int, int, int]:
        """The square the classifier reads, FRAMING times the landmarks' long side around their centre:
        left, top, right, bottom (it may reach past the photo's edges)."""
        left, top, right, bottom = self.box
        side = max(1, round(FRAMING * max(right - left, bottom - top)))
        x0, y0 = round((left + right - side) / 2), round((top + bottom - side) / 2)
        return x0, y0, x0 + side, y0 + side

    def fingers(self) -> int | None:
        """How many fingers, the thumb among them, the points show held out (finger_ratios against THUMB_OUT
        and FINGER_OUT); None when the points are too degenerate to tell (no palm length)."""
        ratios = finger_ratios(self.points[None])[0]
        if not np.isfinite(ratios).all():
            return None
        return int(ratios[0] > THUMB_OUT) + int((ratios[1:] > FINGER_OUT).sum())

    def without_thumb(self) -> Hand:
        """The same hand with its thumb folded away: the thumb's three outer points moved onto its base."""
        points = self.points.copy()
        points[2:5] = points[1]
        return Hand(points, self.score)

    def silhouette(self, size: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> Image.Image:
        """The hand's shape drawn from its points, as a soft 8-bit mask of an image `size` whose top left is
        at `offset` in the photo: the palm, each bone as wide as a finger (the knuckles' spacing), the forearm
        below the wrist; its edge blurred over a quarter of a finger."""
        points = self.points - np.asarray(offset, dtype=np.float32)
        # Widths from the knuckles' spacing, but at least a share of the palm's length (wrist to middle
        # knuckle), which a hand seen from the side (a fist, an O) keeps while its knuckles line up.
        length = float(np.linalg.norm(points[9] - points[0]))
        finger = max(float(np.mean(np.linalg.norm(np.diff(points[list(KNUCKLES)], axis=0), axis=1))),
                     MIN_FINGER * length)
        palm = max(float(np.linalg.norm(points[5] - points[17])), MIN_PALM * length)
        width = max(1, round(finger))
        mask = Image.new("L", size, 0)
        draw = ImageDraw.Draw(mask)
        draw.polygon([tuple(points[i]) for i in PALM], fill=255)
        for start, end in BONES:
            draw.line([tuple(points[start]), tuple(points[end])], fill=255, width=width)
        for x, y in points:  # round joints
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
        down = points[0] - points[9]  # from the middle finger's knuckle through the wrist
        down /= max(float(np.linalg.norm(down)), 1e-6)
        draw.line([tuple(points[0]), tuple(points[0] + down * ARM_LENGTH * palm)], fill=255,
                  width=max(1, round(ARM_WIDTH * palm)))
        return mask.filter(ImageFilter.GaussianBlur(max(1.0, finger / 4)))


def _anchors() -> np.ndarray:
    """The palm detector's 2016 anchor centres (MediaPipe's SSD anchors for it: a 24x24 grid with 2 per
    cell at stride 8, then a 12x12 grid with 6 per cell at stride 16), as x, y in [0, 1]."""
    rows = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = PALM_INPUT // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        rows.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


class HandModelError(ValueError):
    """The hand models cannot be used (missing, changed, or refused by OpenVINO): a broken install, not a
    bad photo, so it is never reported as one."""


def _verified(path: Path) -> Path:
    if not path.is_file():
        raise HandModelError(f"{path}: the hand model is missing (run `signs fetch-hand-models`)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256[path.name]:
        raise HandModelError(f"{path}: the hand model's SHA-256 is not MediaPipe's (run `signs fetch-hand-models`)")
    return path


def _extract(wheel: Path, folder: Path) -> None:
    """The two models out of MediaPipe's wheel into `folder`, each checked before it replaces a file there."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, member in WHEEL_MEMBERS.items():
            content = archive.read(member)
            if hashlib.sha256(content).hexdigest() != SHA256[name]:
                raise HandModelError(f"{wheel.name}: {member} is not the model this version expects")
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as temporary:
                temporary.write(content)
            os.replace(temporary.name, folder / name)


def fetch_hand_models() -> list[Path]:
    """Make sure both models are in MODELS and are MediaPipe's: when they are, nothing is downloaded;
    otherwise MediaPipe's wheel is downloaded from PyPI (about 35 MB, with pip, not installed) and the two
    files taken from it. Raises HandModelError when that fails."""
    paths = [PALM_MODEL, LANDMARK_MODEL]
    try:
        return [_verified(path) for path in paths]
    except HandModelError:
        pass
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", download, *WHEEL]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(download).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise HandModelError(f"cannot download {WHEEL[0]} from PyPI for its hand models: {reason}")
        _extract(wheels[0], MODELS)
    return [_verified(path) for path in paths]


class HandFinder:
    """The two models compiled once, in fp32 (the same answers on every CPU), with one single-threaded
    stream per core, so that decoding threads, each with its own inference requests, look for hands at the
    same time."""

    def __init__(self) -> None:
        import openvino as ov  # the server's engine already loads it; here only when a hand is looked for

        streams = os.cpu_count() or 1
        config = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams}
        core = ov.Core()
        try:
            self._palm = core.compile_model(core.read_model(str(_verified(PALM_MODEL))), "CPU", config)
            self._landmarks = core.compile_model(core.read_model(str(_verified(LANDMARK_MODEL))), "CPU", config)
            # Outputs by name, not position: the palm's boxes and scores; the hand's landmarks and presence.
            self._outputs = {"boxes": self._palm.output("Identity"), "scores": self._palm.output("Identity_1"),
                             "landmarks": self._landmarks.output("Identity"),
                             "presence": self._landmarks.output("Identity_1")}
        except RuntimeError as error:
            raise HandModelError(f"OpenVINO {ov.__version__} cannot load the hand models in {MODELS}: "
                                 f"{str(error).strip().splitlines()[0]}") from None
        self._anchors = _anchors()
        self._local = threading.local()

    def _requests(self):
        if not hasattr(self._local, "palm"):
            self._local.palm = self._palm.create_infer_request()
            self._local.landmarks = self._landmarks.create_infer_request()
        return self._local.palm, self._local.landmarks

    def find(self, image: Image.Image) -> Hand | None:
        """The most likely hand in a photo, or None when there is none."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        palm_request, landmark_request = self._requests()
        palm = self._best_palm(image, palm_request)
        if palm is None:
            return None
        centre, side, angle, palm_score = palm
        # The landmark model reads the palm's square, turned upright: map its pixels back to the photo's.
        scale = side / LANDMARK_INPUT
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        x0 = centre[0] - (cos - sin) * LANDMARK_INPUT / 2
        y0 = centre[1] - (sin + cos) * LANDMARK_INPUT / 2
        affine = (cos, -sin, x0, sin, cos, y0)
        patch = image.transform((LANDMARK_INPUT, LANDMARK_INPUT), Image.Transform.AFFINE, affine,
                                Image.Resampling.BILINEAR)
        outputs = landmark_request.infer([np.asarray(patch, dtype=np.float32)[None] / 255])
        landmarks = outputs[self._outputs["landmarks"]].reshape(21, 3)[:, :2]
        presence = float(outputs[self._outputs["presence"]].reshape(-1)[0])
        points = np.stack([cos * landmarks[:, 0] - sin * landmarks[:, 1] + x0,
                           sin * landmarks[:, 0] + cos * landmarks[:, 1] + y0], 1)
        if not presence >= MIN_PRESENCE or not np.isfinite(points).all():
            return None
        return Hand(points.astype(np.float32), presence * palm_score)

    def _best_palm(self, image: Image.Image, request) -> tuple[np.ndarray, float, float, float] | None:
        """The best palm's square for the landmark model: centre (pixels), side, the angle that turns its
        fingers up, and the palm's score; None when no palm scores MIN_PALM_SCORE."""
        # The photo shrunk to fit the detector's square first (an elongated photo never becomes a huge
        # canvas), centred on black as MediaPipe letterboxes it.
        shrink = PALM_INPUT / max(image.size)
        fitted = image.resize((max(1, round(image.width * shrink)), max(1, round(image.height * shrink))),
                              Image.Resampling.BILINEAR)
        offset = np.array([(PALM_INPUT - fitted.width) // 2, (PALM_INPUT - fitted.height) // 2], dtype=np.float32)
        canvas = Image.new("RGB", (PALM_INPUT, PALM_INPUT))
        canvas.paste(fitted, (int(offset[0]), int(offset[1])))
        outputs = request.infer([np.asarray(canvas, dtype=np.float32)[None] / 255])
        raw = outputs[self._outputs["boxes"]].reshape(-1, 18)
        logits = outputs[self._outputs["scores"]].reshape(-1)
        scores = 1 / (1 + np.exp(-np.clip(logits, -100, 100)))
        keep = scores >= MIN_PALM_SCORE
        if not keep.any():
            return None
        raw, scores, anchors = raw[keep] / PALM_INPUT, scores[keep], self._anchors[keep]
        centres = raw[:, :2] + anchors
        boxes = np.concatenate([centres - raw[:, 2:4] / 2, centres + raw[:, 2:4] / 2], 1)
        keypoints = raw[:, 4:].reshape(-1, 7, 2) + anchors[:, None, :]
        # MediaPipe's weighted suppression: the best palm's box and keypoints, averaged over the detections
        # that overlap it, weighted by their scores.
        best = int(scores.argmax())
        group = _overlap(boxes[best], boxes) > NMS_OVERLAP
        group[best] = True
        weights = scores[group] / scores[group].sum()
        to_pixels = PALM_INPUT / shrink  # from the detector's [0, 1] to the photo's pixels
        box = (boxes[group] * weights[:, None]).sum(0) * to_pixels - np.tile(offset, 2) / shrink
        keypoints = (keypoints[group] * weights[:, None, None]).sum(0) * to_pixels - offset / shrink
        wrist, knuckle = keypoints[0], keypoints[2]  # the palm's keypoints 0 and 2: wrist, middle finger's knuckle
        up = (knuckle - wrist) / max(float(np.linalg.norm(knuckle - wrist)), 1e-6)
        palm_side = float(max(box[2] - box[0], box[3] - box[1]))
        if not palm_side >= 1 or not np.isfinite(box).all() or not np.isfinite(up).all():
            return None
        centre = (box[:2] + box[2:]) / 2 + up * PALM_TO_HAND_SHIFT * palm_side
        return centre, PALM_TO_HAND_SCALE * palm_side, math.atan2(up[0], -up[1]), float(scores[best])


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (left, top, right, bottom)."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return intersection / (np.prod(box[2:] - box[:2]) + areas - intersection + 1e-12)


_building = threading.Lock()


@functools.cache
def _finder() -> HandFinder:
    return HandFinder()


def finder() -> HandFinder:
    """The process's one HandFinder, built at first use (about 0.2 s; the server and `signs predict` build
    it before their first photo). Raises HandModelError when the models cannot be used."""
    with _building:  # decoding threads that start together build it once
        return _finder()


def find_hand(image: Image.Image) -> Hand | None:
    """The most likely hand in an RGB photo, or None when the models see none."""
    return finder().find(image)
