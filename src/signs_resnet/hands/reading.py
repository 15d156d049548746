"""Reading the hand's 21 landmarks: how likely each finger is held up (the thumb too), how likely the hand makes
an O, and from them the probability of each count of fingers 0-5, whichever fingers show it
(docs/robustness.md, "The hand's reading").

    each finger held up:  one logistic model for the four fingers (its tip's reach from the wrist), one for the
                          thumb (its bend and how far its tip lies across the palm, in 3-D)
    an O:                 a logistic model on the thumb's tip against the nearest fingertip and the longest finger
    the count:            P(O) for 0, else the sum of five independent fingers (a Poisson-binomial distribution)

Every feature is a ratio of lengths or an angle, so a hand turned, mirrored (a left hand) or at any size reads
the same. The models' weights are fitted on the 1080 SIGNS training photos alone (`python
benchmarks/finger_count.py`) and ship as `finger_reading.json`, checked against its SHA-256 when read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

READING_FILE = Path(__file__).with_name("finger_reading.json")
READING_SHA256 = "80d354b11a609147860a0c73d9da62a8b867f48df2cfbf5f544ac9ab64ac527c"
FINGERS = ((5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))  # knuckle, joints, tip
TIPS = (8, 12, 16, 20)
# The features each model reads (features() computes them all).
THUMB_FEATURES = ("thumb_bend", "thumb_across")
FINGER_FEATURES = ("finger_reach",)
O_FEATURES = ("thumb_to_tips", "longest_finger", "longest_chain")


class ReadingError(RuntimeError):
    """The fingers' reading file is missing or not the one this package was released with."""


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The angle between vectors (... x 3), in degrees; NaN where one has no length."""
    lengths = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    cos = (a * b).sum(-1) / np.where(lengths > 1e-12, lengths, np.nan)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def features(points: np.ndarray, world: np.ndarray) -> dict[str, np.ndarray]:
    """For K hands, their landmarks in the photo (K x 21 x 2) and in 3-D (K x 21 x 3, the landmark model's world
    landmarks), every feature the models read, K values each (K x 4 for `finger_reach`, one per finger). NaN where
    a length is zero.

    finger_reach    each finger's tip's distance from the wrist over its middle joint's (photo)
    thumb_bend      the thumb's two joints' bends added, in degrees (3-D)
    thumb_across    how far the thumb's tip lies across the palm, from the index's knuckle towards the little
                    finger's, in that span (0: level with the index's knuckle; 1: with the little finger's; below 0:
                    held out beside the index; 3-D). A thumb folded over the palm and one held out to the side make
                    the same angle with the index, but lie on either side of its knuckle.
    thumb_to_tips   the thumb's tip's distance to the nearest fingertip over the palm's length (photo)
    longest_finger  the largest finger_reach
    longest_chain   the largest share of a finger's chain of bones that its tip's distance from the wrist spans
                    (1: the finger straight in line with the wrist; 3-D)
    """
    from_wrist = np.linalg.norm(points - points[:, :1], axis=-1)  # K x 21
    lengths = np.where(from_wrist > 1e-9, from_wrist, np.nan)
    palm = lengths[:, 9]
    finger_reach = np.stack([from_wrist[:, tip] / lengths[:, tip - 2] for tip in TIPS], 1)
    across = world[:, 17] - world[:, 5]  # the palm's width, the index's knuckle to the little finger's
    span = (across * across).sum(-1)
    chains = []
    for knuckle, *_ in FINGERS:
        chain = [0, knuckle, knuckle + 1, knuckle + 2, knuckle + 3]
        bones = np.linalg.norm(np.diff(world[:, chain], axis=1), axis=-1).sum(1)
        chains.append(np.linalg.norm(world[:, knuckle + 3] - world[:, 0], axis=-1) / np.where(bones > 1e-9, bones, np.nan))
    return {
        "finger_reach": finger_reach,
        "thumb_bend": (_angle(world[:, 2] - world[:, 1], world[:, 3] - world[:, 2])
                       + _angle(world[:, 3] - world[:, 2], world[:, 4] - world[:, 3])),
        "thumb_across": ((world[:, 4] - world[:, 5]) * across).sum(-1) / np.where(span > 1e-12, span, np.nan),
        "thumb_to_tips": np.linalg.norm(points[:, list(TIPS)] - points[:, 4:5], axis=-1).min(1) / palm,
        "longest_finger": finger_reach.max(1),
        "longest_chain": np.stack(chains, 1).max(1),
    }


@dataclass(frozen=True)
class Logistic:
    """A logistic model on standardised features: P = sigmoid(weights . (x - mean) / scale + bias)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The probability for each row of `values` (... x len(names))."""
        z = (values - np.asarray(self.mean)) / np.asarray(self.scale) @ np.asarray(self.weights) + self.bias
        return 1 / (1 + np.exp(-np.clip(z, -50, 50)))

    def as_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Logistic:
        return cls(tuple(data["names"]), *(tuple(float(v) for v in data[key]) for key in ("mean", "scale", "weights")),
                   float(data["bias"]))


def count_probabilities(up: np.ndarray, o: np.ndarray) -> np.ndarray:
    """The probability of each count 0-5 (K x 6) from each finger's probability of being held up (K x 5) and
    the hand's of making an O (K): an O is 0; otherwise the fingers are counted as independent (a
    Poisson-binomial distribution: any three fingers make a 3)."""
    counts = np.zeros((len(up), 6))
    counts[:, 0] = 1
    for finger in range(5):
        p = up[:, finger : finger + 1]
        counts = np.concatenate([counts[:, :1] * (1 - p), counts[:, 1:] * (1 - p) + counts[:, :-1] * p], 1)
    return o[:, None] * np.eye(6)[0] + (1 - o[:, None]) * counts


@dataclass(frozen=True)
class Reading:
    """One hand's reading: each finger's probability of being held up (thumb, index, middle, ring, little), the
    hand's of making an O, and each count's, 0 to 5."""

    fingers_up: tuple[float, ...]
    o: float
    counts: tuple[float, ...]

    @property
    def count(self) -> int:
        """The most probable count of fingers held up."""
        return int(np.argmax(self.counts))


@dataclass(frozen=True)
class FingerReading:
    """The three fitted models (thumb, finger, O) and what they were fitted with."""

    thumb: Logistic
    finger: Logistic
    o: Logistic
    fitted_with: dict[str, Any]

    def read_many(self, points: np.ndarray, world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For K hands (K x 21 x 2 photo points, K x 21 x 3 world points): the fingers' probabilities of being
        held up (K x 5), the O's (K) and the counts' (K x 6); NaN rows where the points are degenerate."""
        values = features(points, world)
        thumb, fingers, o = (model(np.stack([values[name] for name in model.names], -1))
                             for model in (self.thumb, self.finger, self.o))  # fingers: K x 4, one per finger
        up = np.concatenate([thumb[:, None], fingers], 1)
        counts = count_probabilities(up, o)
        bad = ~(np.isfinite(up).all(1) & np.isfinite(o) & np.isfinite(counts).all(1))
        counts[bad], up[bad], o[bad] = np.nan, np.nan, np.nan
        return up, o, counts

    def read(self, points: np.ndarray, world: np.ndarray) -> Reading | None:
        """One hand's Reading, None when its points are too degenerate to read (no palm, a finger of no length)."""
        up, o, counts = self.read_many(points[None], world[None])
        if not np.isfinite(counts).all():
            return None
        return Reading(tuple(float(v) for v in up[0]), float(o[0]), tuple(float(v) for v in counts[0]))

    def as_json(self) -> dict[str, Any]:
        return {"thumb": self.thumb.as_json(), "finger": self.finger.as_json(), "o": self.o.as_json(),
                "fitted_with": self.fitted_with}


def load_reading(path: Path = READING_FILE, sha256: str = READING_SHA256) -> FingerReading:
    """The fingers' reading from its file, refused unless its SHA-256 is the one given (the release's)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ReadingError(f"cannot read the fingers' reading {path}: {error.strerror or error}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ReadingError(f"{path} is not the fingers' reading this package was released with (SHA-256 differs): "
                           "reinstall the package, or refit it with benchmarks/finger_count.py")
    try:
        parsed = json.loads(data)
        reading = FingerReading(Logistic.from_json(parsed["thumb"]), Logistic.from_json(parsed["finger"]),
                                Logistic.from_json(parsed["o"]), dict(parsed["fitted_with"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ReadingError(f"{path}: not a fingers' reading ({error})") from None
    return reading


@functools.cache
def finger_reading() -> FingerReading:
    """The package's fingers' reading, read and checked once."""
    return load_reading()
