"""The shown answer's rule (smoothing.py): a new label, or no hand, shown once it holds for HOLD_FRAMES frames."""

from __future__ import annotations

import pytest

from signs_resnet.smoothing import HOLD_FRAMES, ShownAnswer


def shown_after(labels: list[str | None], hold_frames: int = HOLD_FRAMES) -> list[str | None]:
    shown = ShownAnswer(hold_frames)
    return [shown.update(label) for label in labels]


def test_a_new_label_is_shown_once_it_holds_for_three_frames():
    assert HOLD_FRAMES == 3
    assert shown_after(["5", "5", "5", "5"]) == [None, None, "5", "5"]
    # one or two misread frames never show; the third in a row does
    assert shown_after(["5", "5", "5", "2", "5", "2", "2", "2"]) == [None, None, "5", "5", "5", "5", "5", "2"]
    # a run broken by another label starts over
    assert shown_after(["5", "5", "5", "2", "2", "3", "2", "2", "2"])[-4:] == ["5", "5", "5", "2"]


def test_no_hand_is_shown_once_the_hand_has_been_gone_for_three_frames():
    labels = ["4", "4", "4", None, None, None, None, "4"]
    assert shown_after(labels) == [None, None, "4", "4", "4", None, None, None]
    assert shown_after(["4", "4", "4", None, None, "4", None, None])[-3:] == ["4", "4", "4"]  # back in time


def test_one_frame_shows_every_label_and_fewer_are_refused():
    assert shown_after(["1", None, "2"], hold_frames=1) == ["1", None, "2"]
    with pytest.raises(ValueError, match="at least 1"):
        ShownAnswer(0)
