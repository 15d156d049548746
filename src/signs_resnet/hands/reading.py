"""Reading the hand's landmarks: how many fingers it holds up, and how often SIGNS hands of each class show
each count (docs/accuracy.md, "The hand's count")."""

from __future__ import annotations

import numpy as np

# A finger is held out when its tip is this many times farther from the wrist than its middle joint; the thumb
# when its tip is this many palm lengths (wrist to middle knuckle) from the palm's centre. Fitted to the 1080
# SIGNS training photos enlarged 4x: `python benchmarks/finger_count.py` (docs/accuracy.md, "The hand's count").
FINGER_OUT, THUMB_OUT = 1.22, 0.80
FINGER_JOINTS = ((6, 8), (10, 12), (14, 16), (18, 20))  # each finger's middle joint and tip
PALM_CENTRE = (0, 5, 9, 13, 17)  # the palm's centre: the mean of the wrist and the four knuckles
# How often a SIGNS hand of each class shows each count (Hand.fingers) from 0 to 5, one added to every cell so
# that no count rules a class out: an answer weighs the network's probabilities by it (answer.posterior).
# Fitted with the thresholds above, on the same photos, by `python benchmarks/finger_count.py`
# (docs/accuracy.md, "The hand's count").
# What COUNT_LIKELIHOOD was counted with: the thresholds above, the hand models (by SHA-256) that place the
# landmarks, and the finder's second search (its ROOM: which hands are found). A change to any changes the
# counts: refit the table with the benchmark above, then this.
COUNT_FITTED_WITH = {"FINGER_OUT": 1.22, "THUMB_OUT": 0.80, "ROOM": 2.0,
                     "palm_detection_full.tflite": "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
                     "hand_landmark_full.tflite": "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"}
COUNT_LIKELIHOOD = {  # class: P(count 0, 1, ..., 5 | class)
    "0": (0.360, 0.446, 0.109, 0.029, 0.034, 0.023),
    "1": (0.006, 0.804, 0.140, 0.028, 0.017, 0.006),
    "2": (0.006, 0.023, 0.828, 0.098, 0.023, 0.023),
    "3": (0.006, 0.006, 0.035, 0.908, 0.017, 0.029),
    "4": (0.006, 0.006, 0.006, 0.045, 0.881, 0.057),
    "5": (0.005, 0.005, 0.005, 0.005, 0.167, 0.812),
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
