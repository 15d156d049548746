"""The hand finder in front of the network (hands/, preprocess.frame_hand): it finds a SIGNS hand pasted into a
synthetic frame at a known place and cuts it out onto SIGNS' background, leaves SIGNS photos as they are,
answers "no hand" for a photo without one, refuses a model file that is not MediaPipe's, fetches the models
only when they are missing, and gives the same answer from several threads."""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SHARED
from PIL import Image

from signs_resnet import answer
from signs_resnet.data import datasets, preprocess
from signs_resnet.hands import detector, geometry, model_files, reading
from signs_resnet.training import synthetic
from signs_resnet.training.augment import hand_mask, procedural_backgrounds

SIGNS_TEST = SHARED / "signs" / "64x64_SIGNS" / "test_signs"


def iou(a, b) -> float:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def signs_photos(per_class: int) -> list[Path]:
    files = sorted(SIGNS_TEST.glob("*.jpg"))
    if not files:
        pytest.skip(f"{SIGNS_TEST} holds no photos")
    return [file for c in "012345" for file in [f for f in files if f.name[0] == c][:per_class]]


def pasted_frame(photo: Path, box: tuple[int, int, int, int], seed: int) -> Image.Image:
    """A 400x300 frame of a procedural background with the SIGNS photo's hand (its mask, augment.hand_mask)
    pasted at `box`, enlarged to it: the photo's wall is replaced by the background."""
    left, top, right, bottom = box
    pixels = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    hand = torch.nn.functional.interpolate(pixels, size=(bottom - top, right - left), mode="bilinear",
                                           align_corners=False)
    frame = procedural_backgrounds(1, 300, 400, torch.Generator().manual_seed(seed))
    mask = hand_mask(hand)
    frame[:, :, top:bottom, left:right] = mask * hand + (1 - mask) * frame[:, :, top:bottom, left:right]
    return Image.fromarray((frame[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


@pytest.mark.parametrize("box", [(40, 20, 190, 170), (230, 130, 350, 250), (150, 60, 330, 240)])
def test_the_finder_recovers_a_signs_hand_pasted_at_a_known_box(box):
    """The square the network reads covers the pasted SIGNS photo (IoU >= 0.5): the hand framed as SIGNS
    frames it, wherever it is and whatever its size."""
    photos = signs_photos(per_class=3)
    overlaps = []
    for seed, photo in enumerate(photos):
        image = pasted_frame(photo, box, seed)
        _, framing = preprocess.prepare(image)
        assert framing.searched
        overlaps.append(iou(framing.crop, box) if framing.crop else 0.0)
    found = np.mean([o > 0 for o in overlaps])
    assert found >= 0.75, f"a hand found in {found:.0%} of the frames"
    assert np.mean([o >= 0.5 for o in overlaps]) >= 0.7, sorted(overlaps)
    assert np.median(overlaps) >= 0.6


def test_the_hand_is_cut_out_onto_the_signs_background_and_is_what_the_network_reads():
    """Inside the hand's silhouette the network reads the photo's pixels, outside it SIGNS' plain background,
    in the square around the hand (the procedural room around it is gone)."""
    photo = signs_photos(per_class=1)[5]  # a "5"
    box = (200, 100, 350, 250)
    image = pasted_frame(photo, box, seed=1)
    pixels, framing = preprocess.frame(image)
    hand = detector.find_hand(image)
    assert hand is not None and hand.score > 0.5 and framing.crop == hand.square()
    assert iou(hand.box, box) > 0.3 and iou(framing.crop, box) >= 0.5
    left, top, right, bottom = framing.crop
    side = right - left
    mask = np.asarray(hand.silhouette((side, side), (left, top)).resize((64, 64), Image.Resampling.BILINEAR))
    photo_pixels = np.asarray(image.crop(framing.crop).resize((64, 64), Image.Resampling.LANCZOS), dtype=int)
    hand_inside, room = mask >= 240, mask == 0
    assert hand_inside.mean() > 0.1 and room.mean() > 0.3, (hand_inside.mean(), room.mean())
    assert np.abs(pixels[hand_inside].astype(int) - photo_pixels[hand_inside]).mean() < 3
    assert np.abs(pixels[room].astype(int) - np.array(preprocess.BACKGROUND)).max() <= 2
    assert np.abs(photo_pixels[room] - np.array(preprocess.BACKGROUND)).mean() > 20  # the room was not that colour


def test_the_silhouette_covers_the_hands_points_and_not_the_corners():
    image = pasted_frame(signs_photos(per_class=1)[2], (120, 60, 300, 240), seed=3)
    hand = detector.find_hand(image)
    assert hand is not None
    mask = np.asarray(hand.silhouette(image.size))
    assert mask.shape == (300, 400) and mask.dtype == np.uint8
    for x, y in hand.points.round().astype(int):
        if 0 <= x < 400 and 0 <= y < 300:
            assert mask[y, x] >= 128
    assert mask[0, 0] == mask[0, -1] == 0
    window = np.asarray(hand.silhouette((100, 100), (150, 100)), dtype=int)  # a window of the photo
    inner = (slice(20, 80), slice(20, 80))  # away from the window's edges, which its blur treats as its own
    assert np.abs(window[inner] - mask[100:200, 150:250][inner]).max() <= 2


def test_training_photos_are_cut_out_as_a_prediction_reads_them_enlarged():
    """synthetic.cut_out_photos: each SIGNS photo enlarged 4x and through the product's preprocessing (the hand
    found and cut out), the photo as it is where no hand is found; the same every time."""
    photos = signs_photos(per_class=2)
    images = torch.from_numpy(np.stack([np.array(Image.open(p).convert("RGB")) for p in photos])).permute(0, 3, 1, 2)
    cut_outs, found = synthetic.cut_out_photos(images)
    assert cut_outs.shape == images.shape and cut_outs.dtype == torch.uint8
    assert len(photos) // 2 <= found <= len(photos)
    changed = 0
    for image, cut_out in zip(images, cut_outs):
        enlarged = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((256, 256), Image.Resampling.BICUBIC)
        pixels, framing = preprocess.frame(enlarged)
        expected = pixels if framing.crop is not None else image.permute(1, 2, 0).numpy()
        assert np.array_equal(cut_out.permute(1, 2, 0).numpy(), expected)
        changed += framing.crop is not None
    assert changed == found
    assert torch.equal(synthetic.cut_out_photos(images)[0], cut_outs)


def test_a_hand_without_its_thumb_keeps_every_other_point():
    points = np.arange(42, dtype=np.float32).reshape(21, 2)
    world = np.arange(63, dtype=np.float32).reshape(21, 3)
    folded = geometry.Hand(points, 0.9, world).without_fingers((0,))  # the thumb
    assert np.array_equal(folded.points[[0, 1, *range(5, 21)]], points[[0, 1, *range(5, 21)]])
    assert (folded.points[2:5] == points[1]).all() and (folded.world[2:5] == world[1]).all()
    assert np.array_equal(folded.world[5:], world[5:])
    no_index = geometry.Hand(points, 0.9, world).without_fingers((1,))  # the index folded onto its knuckle
    assert (no_index.points[6:9] == points[5]).all() and (no_index.world[6:9] == world[5]).all()
    assert np.array_equal(no_index.points[[*range(0, 6), *range(9, 21)]], points[[*range(0, 6), *range(9, 21)]])


def test_an_open_hand_in_a_phone_photo_shows_five_fingers(sample_jpg):
    framing = preprocess.prepare(sample_jpg)[1]
    assert framing.fingers == 5 and answer.hand_json(framing)["fingers"] == 5
    assert answer.shows(framing, "5") and not answer.shows(framing, "4") and answer.shows(framing, "cat")
    assert answer.shows(preprocess.Framing(), "4")  # no points: nothing to disagree


def test_a_five_without_its_thumb_keeps_the_rest_of_the_photo():
    """synthetic.thumbless_photos: in SIGNS 5s the thumb (where its tip was) is painted like the wall beside the
    hand, while the fingers' tips and the photo's far corners keep their pixels; a photo with no hand comes
    back as it is; the same every time."""
    fives = [photo for photo in signs_photos(per_class=6) if photo.name[0] == "5"]
    images = torch.from_numpy(np.stack([np.array(Image.open(p).convert("RGB")) for p in fives])).permute(0, 3, 1, 2)
    wall = torch.full((1, 3, 64, 64), 200, dtype=torch.uint8)
    painted, found = synthetic.thumbless_photos(torch.cat([images, wall]))
    assert painted.dtype == torch.uint8 and painted.shape == (len(fives) + 1, 3, 64, 64)
    assert not found[-1] and torch.equal(painted[-1], wall[0])
    assert int(found.sum()) >= len(fives) - 1
    for image, thumbless, hand_found, photo in zip(images, painted, found, fives):
        if not hand_found:
            assert torch.equal(thumbless, image)
            continue
        big = Image.open(photo).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC)
        points = detector.find_hand(big).points / 4
        changed = (thumbless.int() - image.int()).abs().sum(0)
        tip = points[4].round().astype(int).clip(0, 63)
        assert changed[tip[1], tip[0]] > 30, f"{photo.name}: the thumb's tip is still there"
        for finger in (8, 12, 16, 20):  # the fingers' tips
            x, y = points[finger].round().astype(int).clip(0, 63)
            assert changed[y, x] <= 6, f"{photo.name}: finger tip {finger} was painted"
        assert (changed > 0).float().mean() < 0.2
        # painted towards the wall: the thumb's tip ends up close in colour to the photo's own border
        border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], 1).float().median(1).values
        assert (thumbless[:, tip[1], tip[0]].float() - border).abs().max() < 40
    assert torch.equal(synthetic.thumbless_photos(images)[0], painted[:-1])


def test_signs_photos_are_read_as_they_are():
    """64x64 photos (SIGNS' own, and every model-ready input) are not searched: the network reads the photo."""
    for photo in signs_photos(per_class=2):
        image, framing = preprocess.prepare(photo)
        assert framing == preprocess.Framing() and not framing.hand_found and answer.hand_json(framing) is None
        assert torch.equal(image, preprocess.scale(torch.from_numpy(np.array(Image.open(photo).convert("RGB")))
                                             .permute(2, 0, 1)[None])[0])


def test_an_enlarged_signs_photo_keeps_its_framing():
    """A SIGNS photo at 4x its size: the hand is found, and the square is mostly about the photo itself (a
    fist's is smaller: SIGNS frames every hand alike, the finder frames the hand's points)."""
    overlaps = []
    for photo in signs_photos(per_class=2):
        image = Image.open(photo).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC)
        _, framing = preprocess.prepare(image)
        assert framing.searched
        if framing.score is not None:
            overlaps.append(iou(framing.crop, (0, 0, 256, 256)))
    assert len(overlaps) >= 10 and np.median(overlaps) >= 0.6, overlaps


@pytest.mark.parametrize("kind", ["wall", "noise", "gradient"])
def test_a_photo_without_a_hand_is_answered_as_no_hand(kind):
    rng = np.random.default_rng(0)
    pixels = {"wall": np.full((300, 400, 3), 180, np.uint8),
              "noise": rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
              "gradient": np.broadcast_to(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 400, 3))}
    image, framing = preprocess.prepare(Image.fromarray(np.ascontiguousarray(pixels[kind])))
    assert image.shape == (3, 64, 64)
    assert framing.searched and framing.score is None and framing.crop is None and not framing.hand_found
    assert answer.hand_json(framing) == {"found": False, "score": None, "crop": None, "fingers": None, "counts": None,
                                         "fingers_up": None, "o": None, "points": None}


def test_models_that_are_there_and_verified_are_not_downloaded_again(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the models are there")

    monkeypatch.setattr(model_files, "_download", no_download)
    paths = model_files.model_paths()
    assert model_files.fetch_hand_models() == [paths[model_files.PALM_FILE], paths[model_files.LANDMARK_FILE]]


def installed_models() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in model_files.model_paths().items()}


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, member in model_files.WHEEL_MEMBERS.items():
            archive.writestr(member, members[name])
    return path


def test_the_models_are_taken_out_of_mediapipes_wheel_only_when_they_are_its_own(tmp_path):
    models = installed_models()
    wheel = fake_wheel(tmp_path / model_files.WHEEL, models)
    model_files._extract(wheel, tmp_path / "models")
    for name in model_files.WHEEL_MEMBERS:
        assert (tmp_path / "models" / name).read_bytes() == models[name]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(model_files.WHEEL_MEMBERS)  # no temporaries
    changed = fake_wheel(tmp_path / "changed.whl", {name: b"not a model" for name in models})
    with pytest.raises(model_files.HandModelError, match="is not the model this version expects"):
        model_files._extract(changed, tmp_path / "other")
    assert not list((tmp_path / "other").glob("*.tflite"))


def test_a_hand_model_that_is_not_mediapipes_is_refused(tmp_path):
    changed = tmp_path / model_files.PALM_FILE
    changed.write_bytes(installed_models()[model_files.PALM_FILE][:-1] + b"x")
    with pytest.raises(model_files.HandModelError, match="SHA-256 is not MediaPipe's"):
        model_files.verified(changed)
    with pytest.raises(model_files.HandModelError, match="missing .run `signs fetch-hand-models`"):
        model_files.verified(tmp_path / model_files.LANDMARK_FILE)


@pytest.fixture
def no_hand_models(tmp_path, monkeypatch):
    """An install without the hand models: an empty cache folder ($SIGNS_HOME, which is the only place looked at
    when set)."""
    monkeypatch.setenv("SIGNS_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "hand-models"


@pytest.fixture
def wheel_server(tmp_path, monkeypatch):
    """A real HTTP server on loopback serving one file as MediaPipe's wheel (WHEEL_URL pointed at it); call it
    with the wheel's bytes; it returns how many times the wheel was downloaded."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    downloads = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            downloads.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(model_files, "WHEEL_URL", f"http://127.0.0.1:{server.server_address[1]}/{model_files.WHEEL}")

    def serve(content: bytes) -> list[str]:
        (served / model_files.WHEEL).write_bytes(content)
        return downloads

    yield serve
    server.shutdown()


def test_fetch_downloads_mediapipes_wheel_into_the_cache_folder_without_pip(tmp_path, monkeypatch, wheel_server):
    """What `signs fetch-hand-models` does on a fresh install: the wheel downloaded over HTTP, checked by its
    SHA-256 (a stand-in wheel here, holding the real models), the two models taken out of it into
    $SIGNS_HOME/hand-models; once they are there, nothing is downloaded again."""
    models = installed_models()
    wheel = fake_wheel(tmp_path / "stand-in.whl", models).read_bytes()
    downloads = wheel_server(wheel)
    monkeypatch.setattr(model_files, "WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    monkeypatch.setenv("SIGNS_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "hand-models"
    with pytest.raises(model_files.HandModelError, match="missing .run `signs fetch-hand-models`"):
        model_files.model_paths()
    assert model_files.fetch_hand_models() == [cache / model_files.PALM_FILE, cache / model_files.LANDMARK_FILE]
    assert sorted(p.name for p in cache.iterdir()) == sorted(models)  # no temporaries left behind
    assert {name: (cache / name).read_bytes() for name in models} == models
    assert model_files.fetch_hand_models() and len(downloads) == 1  # there now: not downloaded again


def test_a_download_that_is_not_mediapipes_wheel_is_refused(no_hand_models, wheel_server):
    wheel_server(b"a wheel from somewhere else")
    with pytest.raises(model_files.HandModelError, match="the download is not mediapipe-0.10.21"):
        model_files.fetch_hand_models()
    assert not no_hand_models.exists() or not list(no_hand_models.iterdir())


def test_a_failed_download_is_one_clear_error(no_hand_models, monkeypatch):
    monkeypatch.setattr(model_files, "WHEEL_URL", "http://127.0.0.1:9/nowhere.whl")  # the discard port: refused
    with pytest.raises(model_files.HandModelError, match="cannot download mediapipe-0.10.21"):
        model_files.fetch_hand_models()


@pytest.fixture
def broken_hand_models(no_hand_models):
    """The package's hand models as a broken install has them: missing."""
    detector._finder.cache_clear()
    yield
    detector._finder.cache_clear()


def test_broken_hand_models_are_one_clear_error_not_a_bad_photo(broken_hand_models, signs_jpegs, model_file,
                                                                  sample_jpg, capsys):
    """Not "cannot decode image" for every file: the install is named, once, and the command fails."""
    with pytest.raises(model_files.HandModelError, match="missing .run `signs fetch-hand-models`"):
        preprocess.prepare(sample_jpg)
    preprocess.prepare(signs_jpegs[0])  # 64x64: no hand looked for, nothing to fail
    from signs_resnet import cli

    status = cli.main(["predict", "--model", str(model_file), "--engine", "torch-fp32", str(sample_jpg),
                       str(signs_jpegs[0])])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    [line] = [line for line in captured.err.splitlines() if "error" in line]
    assert line.startswith("signs predict: error: ") and "hand model is missing" in line and "decode" not in line


def test_a_big_rotated_phone_photo_is_cut_where_its_hand_is(tmp_path):
    """A 1600x1200 JPEG stored on its side with an EXIF orientation (as phones write them), decoded at a
    reduced scale (JPEG draft): the square is in the upright full-size photo's pixels."""
    photo = signs_photos(per_class=1)[5]
    box = (200, 100, 350, 250)
    upright = pasted_frame(photo, box, seed=1)
    _, small = preprocess.prepare(upright)
    assert small.crop is not None
    big = upright.resize((1600, 1200), Image.Resampling.BICUBIC)
    stored = big.transpose(Image.Transpose.ROTATE_90)  # what EXIF orientation 6 turns upright again
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    _, framing = preprocess.prepare(tmp_path / "phone.jpg")
    assert framing.crop is not None
    assert iou(framing.crop, [4 * v for v in small.crop]) >= 0.8, (framing.crop, small.crop)


def test_a_long_thin_photo_is_answered_without_a_huge_canvas(monkeypatch):
    """A 40000x70 photo (within the pixel limit) is padded to a square at a few hundred pixels, not at
    40000x40000 (4.8 GB, seconds of work for one request)."""
    from PIL import ImageOps

    canvases, pad = [], ImageOps.pad
    monkeypatch.setattr(ImageOps, "pad", lambda image, size, **kw: canvases.append(size) or pad(image, size, **kw))
    image, framing = preprocess.prepare(Image.new("RGB", (40_000, 70), (200, 170, 140)))
    assert framing.searched and not framing.hand_found
    assert canvases and max(max(size) for size in canvases) <= 16 * 64
    assert torch.allclose(image, torch.tensor([200, 170, 140]).view(3, 1, 1) / 255, atol=1 / 255)


def test_threads_find_the_same_hands(sample_jpg):
    """Decoding threads look for hands at the same time, each with its own inference requests."""
    frames = [pasted_frame(photo, (60 + 20 * i, 40, 210 + 20 * i, 190), i)
              for i, photo in enumerate(signs_photos(per_class=1))] + [Image.open(sample_jpg).convert("RGB")]
    alone = [detector.find_hand(frame) for frame in frames]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(detector.find_hand, frames * 3))
    for one, other in zip(alone * 3, together):
        assert (one is None) == (other is None)
        if one is not None:
            assert np.allclose(one.points, other.points, atol=1e-3) and abs(one.score - other.score) < 1e-5


def test_a_search_alone_takes_every_core_and_overlapping_searches_one_each(monkeypatch, sample_jpg):
    """A photo looked at alone runs on the models compiled with a thread per core; once two searches overlap,
    every search runs on the single-threaded streams until none has overlapped for QUIET_SECONDS; a search that
    fails still ends (the next one is alone again)."""
    finder = detector.finder()
    if "alone" not in finder._compiled:
        pytest.skip("one core: both ways are the same")
    cores = detector.usable_cores()
    for way, (streams, threads) in {"alone": (1, cores), "together": (cores, cores)}.items():
        for model in finder._compiled[way]:
            assert (model.get_property("NUM_STREAMS"), model.get_property("INFERENCE_NUM_THREADS")) == (streams, threads)
    photo = Image.open(sample_jpg).convert("RGB")
    ways, entered, release, broken = [], threading.Event(), threading.Event(), photo.copy()
    find = finder._find

    def spied(image, previous, palm_request, landmark_request):
        if image is broken:
            raise RuntimeError("a search that fails")
        ways.append(next(way for way, requests in vars(finder._local).items() if requests[0] is palm_request))
        if len(ways) == 1 and image is photo:  # the first search waits inside until the second has begun
            entered.set()
            release.wait(10)
        return find(image, previous, palm_request, landmark_request)

    monkeypatch.setattr(finder, "_find", spied)
    monkeypatch.setattr(finder, "_overlapped", -math.inf)
    monkeypatch.setattr(detector, "QUIET_SECONDS", 60.0)  # the third search below counts as just after the overlap
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(finder.find, photo)
        assert entered.wait(10)
        second = pool.submit(finder.find, photo.copy())
        deadline = time.monotonic() + 10
        while len(ways) < 2 and not second.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        hands = [first.result(), second.result()]
    assert ways == ["alone", "together"] and np.allclose(hands[0].points, hands[1].points, atol=1e-3)
    finder.find(photo)
    assert ways[-1] == "together"  # just after an overlap: still under load
    monkeypatch.setattr(detector, "QUIET_SECONDS", 0.0)
    with pytest.raises(RuntimeError):
        finder.find(broken)
    finder.find(photo)
    assert ways[-1] == "alone" and finder._searching == 0


def test_a_hand_seen_from_the_side_keeps_a_body_and_degenerate_points_do_not_fail():
    """Knuckles lined up (a fist or an O from the side) still get bones a share of the palm's length wide;
    points all in one place draw a small blob, not an error."""
    points = np.zeros((21, 2), np.float32)
    points[:, 0] = 100
    points[:, 1] = np.linspace(180, 60, 21)  # wrist at the bottom, all in one vertical line
    mask = np.asarray(geometry.Hand(points, 0.9).silhouette((200, 200)))
    length = float(np.linalg.norm(points[9] - points[0]))
    row = mask[120] >= 128  # across the bones, half-way up
    assert row.sum() >= geometry.MIN_FINGER * length * 0.8
    blob = np.asarray(geometry.Hand(np.full((21, 2), 50.0, np.float32), 0.9).silhouette((100, 100)))
    flat = np.zeros((21, 3), np.float32)
    assert geometry.Hand(np.full((21, 2), 50.0, np.float32), 0.9, flat).reading() is None  # no palm: no count
    assert geometry.Hand(np.full((21, 2), np.nan, np.float32), 0.9, flat).reading() is None
    assert blob.shape == (100, 100) and 0 < int((blob > 0).sum()) < 400


def found(points: np.ndarray):
    """A stand-in for the finder that finds these points in any photo (for geometry the models never give)."""
    return lambda image, previous=None: geometry.Hand(np.asarray(points, np.float32), 0.9)


def test_points_off_the_photo_are_no_hand_even_when_their_square_reaches_into_it(monkeypatch):
    points = np.stack([np.linspace(-60, -5, 21), np.linspace(100, 200, 21)], 1)  # left of the photo
    monkeypatch.setattr(preprocess, "find_hand", found(points))
    image = Image.new("RGB", (400, 300), (90, 120, 60))
    _, framing = preprocess.prepare(image)
    assert framing.searched and not framing.hand_found and framing.crop is None


def test_a_close_up_in_a_huge_photo_is_cut_from_a_reduced_copy(monkeypatch):
    """A hand that fills a 6000x6000 photo: the square (9000 pixels a side) is cut from the photo reduced,
    not built at full size; the network still reads the hand's own pixels in the middle."""
    side = 6000
    points = np.stack([np.full(21, side / 2), np.linspace(side - 10, 10, 21)], 1)
    monkeypatch.setattr(preprocess, "find_hand", found(points))
    image = Image.new("RGB", (side, side), (200, 150, 120))
    pixels, framing = preprocess.frame(image)
    left, top, right, bottom = framing.crop
    assert right - left >= side and framing.hand_found
    assert np.abs(pixels[32, 32].astype(int) - np.array([200, 150, 120])).max() <= 8  # the hand, its edge blurred
    assert np.abs(pixels[2, 2].astype(int) - np.array(preprocess.BACKGROUND)).max() <= 2  # past the photo's edge


def test_a_hand_that_fills_the_photo_is_found_by_the_search_with_room(signs_dir):
    """A SIGNS 3 enlarged 4x: the hand fills the photo, its arm cut at the bottom edge. The palm detector finds
    nothing in the photo as it is; the second search, the photo at half the detector's square, finds it, with
    its three fingers, and the network reads it cut out."""
    photo = Image.open(signs_dir / "64x64_SIGNS" / "test_signs" / "3_IMG_6045.jpg").convert("RGB")
    photo = photo.resize((256, 256), Image.Resampling.BICUBIC)
    finder = detector.finder()
    palm_request, _ = finder._requests(alone=True)
    assert finder._best_palm(photo, palm_request) is None  # no room around the hand: no palm
    hand = finder.find(photo)
    assert hand is not None and hand.reading().count == 3
    left, top, right, bottom = hand.box
    assert 0 <= left < right <= 256 and bottom >= 200  # on the hand, whose wrist reaches the bottom edge
    _, framing = preprocess.prepare(photo)
    assert framing.hand_found and framing.fingers == 3 and framing.crop is not None
