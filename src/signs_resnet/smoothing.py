"""The shown answer's rule, beside the answer's one rule (answer.py): a live stream's frames each get their own
answer, and what is shown changes only once a new answer holds for HOLD_FRAMES frames in a row, so that one
frame's misreading never flickers on the screen.

    frames' labels   5 5 5 2 5 2 2 2 - - - 3
    shown            - - 5 5 5 5 5 2 2 2 - -        (- : no hand)

"No hand" (None) is an answer like the others: the number stays until the hand has been gone for HOLD_FRAMES
frames too. Nothing is shown before the first answer has held.
"""

from __future__ import annotations

# Three frames: a tenth to a third of a second at a camera's 10-30 answers per second, enough to ride over one
# or two misread frames without the shown number lagging the hand noticeably.
HOLD_FRAMES = 3


class ShownAnswer:
    """One stream's shown label: `update` with each frame's label (None: no hand) returns the label to show."""

    def __init__(self, hold_frames: int = HOLD_FRAMES) -> None:
        if hold_frames < 1:
            raise ValueError(f"hold_frames must be at least 1 (1: show every frame's label), got {hold_frames}")
        self.hold_frames = hold_frames
        self.shown: str | None = None
        self._candidate: str | None = None  # a label other than the shown one, and how many frames it has held
        self._held = 0

    def update(self, label: str | None) -> str | None:
        """The label to show after a frame answered `label` (None: no hand in it)."""
        if label == self.shown:
            self._candidate, self._held = None, 0
            return self.shown
        if label == self._candidate:
            self._held += 1
        else:
            self._candidate, self._held = label, 1
        if self._held >= self.hold_frames:
            self.shown, self._candidate, self._held = label, None, 0
        return self.shown
