"""Finding the hand in a photo with MediaPipe's two models run on OpenVINO: the palm detector finds the palm,
the landmark model then places the hand's 21 points (docs/robustness.md, "Finding the hand")."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from signs_resnet.hands import compiled_cache
from signs_resnet.hands.geometry import Hand
from signs_resnet.hands.model_files import LANDMARK_FILE, PALM_FILE, SHA256, HandModelError, int8_models, model_paths

log = logging.getLogger(__name__)

PALM_INPUT = 192  # the palm detector's square input, RGB in [0, 1]
LANDMARK_INPUT = 224  # the landmark model's
# MediaPipe's own settings: a palm counts from a score of 0.5; the landmark model reads a square 2.6 times
# the palm's side, moved half a side towards the fingers and turned so that they point up.
MIN_PALM_SCORE = 0.5
MIN_PRESENCE = 0.5
PALM_TO_HAND_SCALE, PALM_TO_HAND_SHIFT = 2.6, 0.5
NMS_OVERLAP = 0.3
ROOM = 2.0  # the second search's square, in the photo's long sides
# MediaPipe's square for the next video frame from a hand's landmarks (its hand_landmark_landmarks_to_roi): the
# box around the wrist, the palm and each finger's first two joints, turned upright, doubled, moved a tenth of
# its height towards the fingers, squared on its long side.
TRACK_POINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
TRACK_SCALE, TRACK_SHIFT = 2.0, 0.1
QUIET_SECONDS = 1.0  # a search runs alone (every core's thread) when none has overlapped another for this long
# The models' outputs by name: the palm's boxes and scores; the hand's landmarks, presence and world landmarks.
BOXES, SCORES = "Identity", "Identity_1"
POINTS, PRESENCE, WORLD = "Identity", "Identity_1", "Identity_3"


def _anchors() -> np.ndarray:
    """The palm detector's 2016 anchor centres (MediaPipe's SSD anchors for it: a 24x24 grid with 2 per
    cell at stride 8, then a 12x12 grid with 6 per cell at stride 16), as x, y in [0, 1]."""
    rows = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = PALM_INPUT // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        rows.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


class HandFinder:
    """The two models compiled twice: for photos looked at together, one single-threaded stream per core, so
    that decoding threads, each with its own inference requests, look for hands at the same time; for a photo
    looked at alone (no two searches overlapping for QUIET_SECONDS), one stream with a thread per core, which
    answers it sooner (docs/performance.md, "Finding the hand"). The models are MediaPipe's in fp32 (the same
    answers on every CPU), the landmark model in int8 once `signs quantize-hand-models` has made it (`int8` names
    the models that are; docs/robustness.md, "Levers measured")."""

    def __init__(self, int8: bool = True) -> None:
        import openvino as ov  # the server's engine already loads it; here only when a hand is looked for

        cores = usable_cores()
        # (streams, threads) for each way; on one core both ways are the same, so only "together" is compiled.
        ways = {"together": (cores, cores), "alone": (1, cores)} if cores > 1 else {"together": (1, 1)}
        core = ov.Core()
        fp32 = model_paths()
        try:
            quantized = (int8_models() if int8 else None) or {}
        except HandModelError as error:  # a broken int8 model costs speed, never answers: fp32 it is
            log.warning("%s; the hand models run in fp32", error)
            quantized = {}

        while True:
            try:
                palm, landmarks = (read_model(core, fp32[name], quantized.get(name))
                                   for name in (PALM_FILE, LANDMARK_FILE))
                for model, names in ((palm, (BOXES, SCORES)), (landmarks, (POINTS, PRESENCE, WORLD))):
                    for name in names:  # the outputs read by name: there, or the models are not MediaPipe's
                        model.output(name)
                # Each compiled once per CPU and OpenVINO, then imported from the cache folder (compiled_cache).
                sources = {name: _int8_sha256(*quantized[name]) if name in quantized else SHA256[name]
                           for name in (PALM_FILE, LANDMARK_FILE)}
                self._compiled = {way: tuple(compiled_cache.compile_model(core, model, sources[name],
                                                                          compile_options(*config))
                                             for model, name in ((palm, PALM_FILE), (landmarks, LANDMARK_FILE)))
                                  for way, config in ways.items()}
                break
            except RuntimeError as error:
                reason = str(error).strip().splitlines()[0]
                if not quantized:
                    raise HandModelError(f"OpenVINO {ov.__version__} cannot load the hand models in "
                                         f"{fp32[PALM_FILE].parent}: {reason}") from None
                log.warning("OpenVINO %s cannot load the int8 hand models (%s); the hand models run in fp32",
                            ov.__version__, reason)
                quantized = {}
        self.int8 = tuple(quantized)  # the models (file names) that run in int8
        self._anchors = _anchors()
        self._local = threading.local()
        self._searching = 0  # searches under way, in every thread
        self._overlapped = -math.inf  # when a search last began while another was under way (time.monotonic)
        self._count_lock = threading.Lock()
        # Each model once, in the one thread that builds the finder, so that no decoding thread makes OpenVINO's
        # first tensor access: two making it at once deadlocked a `signs predict` (both threads in a C++ static's
        # initialisation under InferRequest.infer, py-spy, 2026-12-06; not reproduced in 30 fresh runs).
        for model in (model for pair in self._compiled.values() for model in pair):
            model.create_infer_request().infer([np.zeros(tuple(model.input(0).shape), np.float32)])

    def _requests(self, alone: bool):
        """This thread's (palm, landmarks) inference requests for a search alone or beside others."""
        way = "alone" if alone and "alone" in self._compiled else "together"
        if not hasattr(self._local, way):
            setattr(self._local, way, tuple(model.create_infer_request() for model in self._compiled[way]))
        return getattr(self._local, way)

    def find(self, image: Image.Image, previous: np.ndarray | None = None) -> Hand | None:
        """The most likely hand in a photo, or None when there is none. `previous`: the hand's 21 points in the
        frame before (a stream's), looked at first as MediaPipe's video mode does: the landmark model alone reads
        the square around them, and the palm detector runs only when no hand is there (the hand comes back
        `tracked`)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        with self._count_lock:
            now = time.monotonic()
            if self._searching:
                self._overlapped = now
            # Alone only once no two searches have overlapped for a while: under load a search that found the
            # others between photos would take every core for itself and slow them (docs/performance.md).
            alone = now - self._overlapped > QUIET_SECONDS
            self._searching += 1
        try:
            return self._find(image, previous, *self._requests(alone))
        finally:
            with self._count_lock:
                self._searching -= 1

    def model_inputs(self, image: Image.Image) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What a search of `image` feeds the palm detector and the landmark model, each input as given to it
        (1 x H x W x 3 in [0, 1]): what int8 calibration runs them on (hands/quantize.py)."""
        palm_inputs: list[np.ndarray] = []
        landmark_inputs: list[np.ndarray] = []
        palm_request, landmark_request = self._requests(alone=False)
        self._find(image.convert("RGB"), None, _Recording(palm_request, palm_inputs),
                   _Recording(landmark_request, landmark_inputs))
        return palm_inputs, landmark_inputs

    def _find(self, image: Image.Image, previous: np.ndarray | None, palm_request, landmark_request) -> Hand | None:
        region = None if previous is None else region_from_points(previous)
        if region is not None:
            hand = self._hand_in(image, landmark_request, *region)
            if hand is not None:
                return replace(hand, tracked=True)
        # A hand that fills the photo leaves the palm detector no room: searched again with the photo at half
        # the detector's square, the rest black (docs/robustness.md, "Finding the hand").
        palm = self._best_palm(image, palm_request) or self._best_palm(image, palm_request, room=ROOM)
        if palm is None:
            return None
        centre, side, angle, palm_score = palm
        return self._hand_in(image, landmark_request, centre, side, angle, palm_score)

    def _hand_in(self, image: Image.Image, request, centre: np.ndarray, side: float, angle: float,
                 palm_score: float = 1.0) -> Hand | None:
        """The landmark model's hand in a square of the photo (centre in pixels, side, the angle that turns its
        fingers up), its score the hand's presence times `palm_score`; None when its presence is under
        MIN_PRESENCE."""
        # The landmark model reads the square turned upright: map its pixels back to the photo's.
        scale = side / LANDMARK_INPUT
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        x0 = centre[0] - (cos - sin) * LANDMARK_INPUT / 2
        y0 = centre[1] - (sin + cos) * LANDMARK_INPUT / 2
        affine = (cos, -sin, x0, sin, cos, y0)
        patch = image.transform((LANDMARK_INPUT, LANDMARK_INPUT), Image.Transform.AFFINE, affine,
                                Image.Resampling.BILINEAR)
        outputs = request.infer([np.asarray(patch, dtype=np.float32)[None] / 255])
        landmarks = outputs[POINTS].reshape(21, 3)[:, :2]
        presence = float(outputs[PRESENCE].reshape(-1)[0])
        points = np.stack([cos * landmarks[:, 0] - sin * landmarks[:, 1] + x0,
                           sin * landmarks[:, 0] + cos * landmarks[:, 1] + y0], 1)
        if not presence >= MIN_PRESENCE or not np.isfinite(points).all():
            return None
        # The world landmarks: the same 21 points in metres, in 3-D, about the hand's centre (what the fingers'
        # reading measures angles on; their frame's turn does not change an angle).
        world = outputs[WORLD].reshape(21, 3)
        if not np.isfinite(world).all():
            world = None
        return Hand(points.astype(np.float32), presence * palm_score, world)

    def _best_palm(self, image: Image.Image, request,
                   room: float = 1.0) -> tuple[np.ndarray, float, float, float] | None:
        """The best palm's square for the landmark model: centre (pixels), side, the angle that turns its
        fingers up, and the palm's score; None when no palm scores MIN_PALM_SCORE. `room`: the detector's
        square is this many times the photo's long side."""
        # The photo shrunk to fit the detector's square first (an elongated photo never becomes a huge
        # canvas), centred on black as MediaPipe letterboxes it.
        shrink = PALM_INPUT / (max(image.size) * room)
        fitted = image.resize((max(1, round(image.width * shrink)), max(1, round(image.height * shrink))),
                              Image.Resampling.BILINEAR)
        offset = np.array([(PALM_INPUT - fitted.width) // 2, (PALM_INPUT - fitted.height) // 2], dtype=np.float32)
        canvas = Image.new("RGB", (PALM_INPUT, PALM_INPUT))
        canvas.paste(fitted, (int(offset[0]), int(offset[1])))
        outputs = request.infer([np.asarray(canvas, dtype=np.float32)[None] / 255])
        raw = outputs[BOXES].reshape(-1, 18)
        logits = outputs[SCORES].reshape(-1)
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
        return centre, PALM_TO_HAND_SCALE * palm_side, _upright_angle(up), float(scores[best])


def read_model(core, fp32: Path, int8: tuple[bytes, bytes] | None = None):
    """A hand model for OpenVINO `core`: the int8 one from the bytes its manifest checked (graph, weights;
    model_files.int8_models) when given, else the fp32 one from its file."""
    if int8 is None:
        return core.read_model(str(fp32))
    import openvino as ov

    graph, weights = int8
    return core.read_model(graph, ov.Tensor(np.frombuffer(weights, np.uint8)))  # the Tensor copies them


def _int8_sha256(graph: bytes, weights: bytes) -> str:
    """One SHA-256 for an int8 model's two files: that of their two SHA-256s."""
    digests = [hashlib.sha256(part).hexdigest() for part in (graph, weights)]
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def compile_options(streams: int, threads: int) -> dict:
    """OpenVINO's CPU settings for a hand model: fp32 arithmetic where it is not int8 (never bf16, so the same
    answers on every CPU), `streams` streams of `threads` threads in all."""
    return {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": threads}


class _Recording:
    """An inference request that keeps every input it runs on (each a new array the search made for it and
    never touches again, so kept as it is)."""

    def __init__(self, request, into: list[np.ndarray]) -> None:
        self._request, self._into = request, into

    def infer(self, inputs: list[np.ndarray]):
        self._into.append(inputs[0])
        return self._request.infer(inputs)


def region_from_points(points: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """The square the landmark model reads to find a hand again where its 21 `points` (pixels) were, as
    MediaPipe's tracking makes it: centre, side and the angle that turns the fingers up (the wrist to the middle
    of the middle knuckle and the index's and ring's); None for points that give no direction."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (21, 2) or not np.isfinite(points).all():
        return None
    knuckles = ((points[5] + points[13]) / 2 + points[9]) / 2
    up = knuckles - points[0]
    length = float(np.linalg.norm(up))
    if length < 1:
        return None
    up /= length
    angle = _upright_angle(up)
    cos, sin = math.cos(angle), math.sin(angle)
    # The points in the hand's upright frame (the photo's turned by -angle), boxed there, the box turned back.
    upright = points[list(TRACK_POINTS)] @ np.array([[cos, -sin], [sin, cos]])
    low, high = upright.min(0), upright.max(0)
    width, height = high - low
    middle = (low + high) / 2 - np.array([0.0, TRACK_SHIFT * height])
    centre = np.array([cos * middle[0] - sin * middle[1], sin * middle[0] + cos * middle[1]])
    side = TRACK_SCALE * float(max(width, height))
    if not side >= 1:
        return None
    return centre, side, angle


def _upright_angle(up: np.ndarray) -> float:
    """The angle that turns the direction `up` (the wrist towards the fingers, in the photo's pixels) to point
    up: what the landmark model's square is turned by, from a palm or from the last frame's points."""
    return math.atan2(up[0], -up[1])


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (left, top, right, bottom)."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return intersection / (np.prod(box[2:] - box[:2]) + areas - intersection + 1e-12)


_building = threading.Lock()


_int8_allowed = True  # whether the process's finder may run int8 models (use_int8)


@functools.cache
def _finder(int8: bool) -> HandFinder:
    return HandFinder(int8)


def finder() -> HandFinder:
    """The process's one HandFinder, built at first use (1.5–1.8 s for its four compiled models on two AVX2
    cores, 2026-12-06; the server and `signs predict` build it before their first photo). Raises HandModelError
    when the models cannot be used."""
    with _building:  # decoding threads that start together build it once
        return _finder(_int8_allowed)


def use_int8(allowed: bool) -> bool:
    """Whether the process's finder, from its next use, may run the int8 models that are there; training says
    no while it trains, so that a seed trains the same model on every CPU whatever the cache folder holds.
    Returns the setting it replaces."""
    global _int8_allowed
    before, _int8_allowed = _int8_allowed, allowed
    return before


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or `taskset`'s cpuset), not the
    machine's count, which would start threads for cores it cannot use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def search_threads() -> int:
    """How many threads should look for hands at once to keep every core busy: two per core, at most 16. While
    one thread's search runs the models, another decodes and cuts out in Python and PIL; with one per core the
    cores idled a fifth of the time under load (docs/performance.md, "Finding the hand")."""
    return min(16, 2 * usable_cores())


def find_hand(image: Image.Image, previous: np.ndarray | None = None) -> Hand | None:
    """The most likely hand in an RGB photo, or None when the models see none; `previous`: the hand's points in
    the frame before, where it is looked for first (HandFinder.find)."""
    return finder().find(image, previous)
