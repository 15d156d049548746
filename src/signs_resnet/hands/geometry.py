"""A found hand's shape from its 21 landmarks: its box, the square the network reads, and its silhouette, so
that the room around it can be painted out (docs/robustness.md, "Cutting the hand out")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from signs_resnet.hands.reading import Reading, finger_reading

# The square the classifier reads: this many times the long side of the hand's points, around their centre.
# Picked on real/'s webcam frames, the selection set (docs/robustness.md, "What real/ chose").
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


@dataclass(frozen=True)
class Hand:
    """A hand found in a photo: its 21 landmarks (x, y in the photo's pixels, MediaPipe's order: the wrist
    first, the middle finger's knuckle ninth), how sure the models are (palm score x hand presence; the presence
    alone for a hand tracked), the same points in 3-D, in metres (the landmark model's world landmarks; None where
    there are none), and whether it was tracked: found where the frame before had it, without the palm detector
    (detector.HandFinder.find)."""

    points: np.ndarray
    score: float
    world: np.ndarray | None = None
    tracked: bool = False

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

    def reading(self) -> Reading | None:
        """What the points show (hands.reading): each finger's probability of being held up, an O's, each
        count's; None without 3-D points or when they are too degenerate to read (no palm length)."""
        if self.world is None:
            return None
        return finger_reading().read(self.points, self.world)

    def without_fingers(self, fingers: tuple[int, ...]) -> Hand:
        """The same hand with the given fingers folded away (0: the thumb, 1: the index ... 4: the little
        finger): each one's three outer points moved onto its base (the thumb's first joint, a finger's knuckle)."""
        points = self.points.copy()
        world = None if self.world is None else self.world.copy()
        for finger in fingers:
            base = 1 if finger == 0 else 4 * finger + 1
            points[base + 1:base + 4] = points[base]
            if world is not None:
                world[base + 1:base + 4] = world[base]
        return Hand(points, self.score, world)

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
