"""benchmarks/hand_finder.py's parts on synthetic inputs: the frames it trains on put the hand where their
answer says, the answer decodes back from its targets, and the crop stays inside the photo."""

import sys

import torch
from conftest import ROOT
from PIL import Image

sys.path.insert(0, str(ROOT / "benchmarks"))
import hand_finder  # noqa: E402
from test_augment import synthetic_signs_photo  # noqa: E402


def test_synthetic_frames_paste_the_hand_inside_its_answer():
    photos, _ = synthetic_signs_photo(16)
    config = hand_finder.FinderConfig(whole_probability=0.0, distractor_probability=0.0, band_probability=0.0)
    frames, boxes = hand_finder.synthetic_frames(photos, torch.Generator().manual_seed(0), config)
    assert frames.shape == (16, 3, hand_finder.FINDER_SIZE, hand_finder.FINDER_SIZE)
    assert frames.min() >= 0 and frames.max() <= 1
    _, masks = hand_finder._paste(photos, hand_finder.hand_mask(photos), torch.zeros(16, 3, 1, 1), boxes,
                                  hand_finder.FINDER_SIZE)
    size = hand_finder.FINDER_SIZE
    centres = (torch.arange(size) + 0.5) / size
    for mask, (x, y, side) in zip(masks[:, 0] > 0.5, boxes.tolist()):
        rows, columns = mask.nonzero(as_tuple=True)
        assert len(rows) > 0
        assert centres[columns].min() >= x - side / 2 - 1 / size and centres[columns].max() <= x + side / 2 + 1 / size
        assert centres[rows].min() >= y - side / 2 - 1 / size  # the arm runs on below the square
    assert torch.equal(frames, hand_finder.synthetic_frames(photos, torch.Generator().manual_seed(0), config)[0])


def test_the_answer_decodes_back_from_its_training_targets():
    boxes = torch.tensor([[0.3, 0.6, 0.4], [0.81, 0.12, 0.25], [0.5, 0.5, 1.0]])
    grid = hand_finder.FINDER_SIZE // hand_finder.STRIDE
    cell, offset, log_side = hand_finder.targets(boxes, grid)
    outputs = torch.full((3, 4, grid, grid), -10.0)
    for i in range(3):
        row, column = divmod(int(cell[i]), grid)
        outputs[i, 0, row, column] = 10
        outputs[i, 1:3, row, column] = torch.logit(offset[i])
        outputs[i, 3, row, column] = log_side[i]
    decoded = hand_finder.decode(outputs)
    assert torch.allclose(decoded, boxes, atol=1e-4)
    assert torch.allclose(hand_finder.iou(decoded, boxes), torch.ones(3), atol=1e-3)
    assert hand_finder.iou(boxes[:1], torch.tensor([[0.7, 0.6, 0.4]])).item() == 0


def test_the_crop_is_a_square_inside_the_photo_or_the_photo_itself():
    finder = hand_finder.HandFinder().eval()
    photo = Image.new("RGB", (200, 200), (200, 190, 180))
    with torch.no_grad():
        head = finder.head
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, float(torch.log(torch.tensor(0.3)))]))
        crop = hand_finder.crop_to_hand(finder, photo)
        assert crop.size == (60, 60)
        head.bias[3] = 0.0  # a side of the whole frame: the photo is framed like SIGNS
        assert hand_finder.crop_to_hand(finder, photo) is photo
