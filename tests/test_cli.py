"""The `signs` command as people try it: default model, files and folders, output formats, pictures only where
asked, symlinked folders, and help that gives every default. Real subprocesses on real files."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import API_KEY, ROOT, SHARED, command_environment, free_port, random_images, save_jpeg

from signs_resnet.cli import build_parser
from signs_resnet.data import datasets


def signs(*args, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "signs_resnet", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=command_environment(env), cwd=cwd)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, signs_jpegs) -> Path:
    """A folder as users have them: photos in nested folders, one under a symlinked folder, one broken file."""
    root = tmp_path_factory.mktemp("photos")
    nested = root / "a" / "b"
    nested.mkdir(parents=True)
    for index, photo in enumerate(signs_jpegs[:3]):
        (nested / f"{index}.jpg").write_bytes(photo.read_bytes())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    save_jpeg(elsewhere / "big.jpg", random_images(1, size=300, seed=3)[0])
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("not an image, skipped in folders")
    return root


@pytest.mark.slow  # decodes and searches a folder of photos for hands: the quick tier keeps the others
def test_predict_reads_folders_recursively_through_symlinks_and_reports_a_bad_file(model_file, photos):
    result = signs("predict", "--model", model_file, "--json", "--engine", "torch-fp32", photos)
    assert result.returncode == 1, result.stderr  # one file failed; the others are answered
    results = json.loads(result.stdout)
    names = [Path(r["path"]).relative_to(photos).as_posix() for r in results]
    assert names == ["a/b/0.jpg", "a/b/1.jpg", "a/b/2.jpg", "broken.png", "linked/big.jpg"]
    assert "broken.png" in results[3]["error"] and "label" not in results[3]
    for answer in results[:3] + results[4:]:
        assert answer["label"] in [str(i) for i in range(6)] and isinstance(answer["confident"], bool)
        assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_predict_answers_as_the_server_does(model_file, server, photos):
    """SIGNS photos and whole webcam frames (the hand found and cut out by the same function): the same
    answer, hand and confidence from `signs predict` and POST /predict."""
    frames = [sorted((SHARED / "real" / "hands_frames" / c).glob("*.jpg"))[:1] for c in "25"]
    files = sorted((photos / "a" / "b").glob("*.jpg")) + [f for found in frames for f in found]
    local = json.loads(signs("predict", "--model", model_file, "--json", *files).stdout)
    assert len(local) == len(files) and any(answer["hand"] for answer in local) == any(frames)
    with server.client() as client:
        for answer, file in zip(local, files):
            remote = client.post("/predict", files={"image": (file.name, file.read_bytes())}).json()
            assert answer["label"] == remote["results"][0]["label"]
            assert answer["hand"] == remote["results"][0]["hand"]
            assert answer["confident"] == remote["results"][0]["confident"]
            probabilities = {p["label"]: p["probability"] for p in remote["predictions"]}
            assert answer["probabilities"] == pytest.approx(probabilities, abs=1e-4)


@pytest.mark.slow
def test_predict_prints_text_and_csv(model_file, photos):
    text = signs("predict", "--model", model_file, photos / "a")
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and len(lines) == 3
    assert all(re.fullmatch(re.escape(str(photos / "a" / "b")) + r"/\d\.jpg: \d \(\d+\.\d%(, not confident)?\)", line)
               for line in lines), lines

    table = signs("predict", "--model", model_file, "--csv", photos)
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.returncode == 1 and len(rows) == 5
    assert list(rows[0]) == ["path", "label", "probability", "confident", *(f"p_{c}" for c in range(6)), "error"]
    assert {row["confident"] for row in rows} <= {"yes", "no", ""} and rows[3]["confident"] == ""
    assert rows[3]["error"] and not rows[3]["label"] and not rows[0]["error"]
    assert sum(float(rows[0][f"p_{c}"]) for c in range(6)) == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_predict_names_missing_paths_and_empty_folders(model_file, tmp_path):
    (tmp_path / "empty").mkdir()
    result = signs("predict", "--model", model_file, "--json", tmp_path / "nothing.jpg", tmp_path / "empty")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [r["error"] for r in json.loads(result.stdout)] == ["no such file or folder", "folder holds no image files"]


@pytest.mark.slow
def test_the_model_defaults_to_signs_model_then_runs_default(model_file, signs_jpegs, tmp_path):
    result = signs("predict", "--json", signs_jpegs[0], env={"SIGNS_MODEL": str(model_file)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in (["predict", signs_jpegs[0]], ["evaluate"], ["export"]):
        result = signs(*command, cwd=tmp_path)  # no runs/default here
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip() == (f"signs {command[0]}: error: runs/default/model.safetensors: no such model "
                                         "file (train one with `signs train`, or name one with --model or SIGNS_MODEL)")


@pytest.mark.slow  # two evaluate processes, plots drawn
def test_evaluate_draws_pictures_only_where_asked(model_file, signs_slice, tmp_path):
    before = sorted(p.name for p in model_file.parent.iterdir())
    result = signs("evaluate", "--model", model_file, "--data", signs_slice / "test_signs.h5")
    assert result.returncode == 0, result.stderr
    assert "wrote" not in result.stdout and sorted(p.name for p in model_file.parent.iterdir()) == before
    result = signs("evaluate", "--model", model_file, "--data", signs_slice / "test_signs.h5", "--out", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p" / "confusion.png").stat().st_size > 1000
    assert f"wrote {tmp_path / 'p' / 'confusion.png'}" in result.stdout
    assert sorted(p.name for p in model_file.parent.iterdir()) == before


def test_dataset_class_folders_may_be_symlinks(tmp_path, signs_jpegs):
    real = tmp_path / "real"
    for photo in signs_jpegs[:2]:
        (real / photo.name[0]).mkdir(parents=True)
        (real / photo.name[0] / photo.name).write_bytes(photo.read_bytes())
    linked = tmp_path / "linked"
    linked.mkdir()
    for folder in real.iterdir():
        (linked / folder.name).symlink_to(folder, target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # read once, not forever
    dataset = datasets.load_image_folder(linked)
    assert len(dataset) == 2 and dataset.classes == [signs_jpegs[0].name[0], signs_jpegs[1].name[0]]


def test_every_option_says_what_it_does_and_its_default():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = []
    for name, command in commands.items():
        for action in command._actions:
            if action.dest == "help":
                continue
            text = action.help or ""
            positional = not action.option_strings
            if len(text) < 10 or not (positional or "default" in text or "required" in text):
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert missing == []


@pytest.mark.slow
def test_an_unreachable_model_file_is_one_line(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    result = signs("predict", "--model", tmp_path / "model.safetensors", tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_server_and_cli_share_one_default_model():
    from signs_resnet.model_file import DEFAULT_MODEL
    from signs_resnet.serving.settings import ServeSettings

    assert ServeSettings.from_env({}).model == DEFAULT_MODEL == "runs/default/model.safetensors"


@pytest.mark.slow
def test_predict_on_a_server_prints_what_predicting_here_prints(model_file, keyed_server, photos):
    """Against a server that wants an API key, in requests of 2 (the broken file inside one): the same
    files, labels and probabilities as here on the server's engine, the same CSV columns."""
    here = json.loads(signs("predict", "--model", model_file, "--engine", "torch-fp32", "--json", photos).stdout)
    remote = signs("predict", "--server", keyed_server.url, "--batch-size", "2", "--json", photos,
                   env={"SIGNS_API_KEY": API_KEY})
    assert remote.returncode == 1, remote.stderr  # one file failed, as here
    there = json.loads(remote.stdout)
    assert [r["path"] for r in there] == [r["path"] for r in here]
    for mine, theirs in zip(here, there):
        assert ("error" in mine) == ("error" in theirs), (mine, theirs)
        if "error" in mine:
            assert "not a readable image" in theirs["error"]
            continue
        assert theirs["label"] == mine["label"]
        assert theirs["probabilities"] == pytest.approx(mine["probabilities"], abs=1e-3)
    as_csv = signs("predict", "--server", keyed_server.url, "--api-key", API_KEY, "--csv", photos)
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["path", "label", "probability", "confident", *(f"p_{c}" for c in "012345"), "error"]
    assert [row[0] for row in rows[1:]] == [r["path"] for r in here]


@pytest.mark.slow
def test_predict_on_a_server_refuses_a_wrong_key_and_an_unreachable_server_in_one_line(keyed_server, photos):
    wrong = signs("predict", "--server", keyed_server.url, "--api-key", "wrong", photos)
    nobody = signs("predict", "--server", f"http://127.0.0.1:{free_port()}", photos)
    for result, reason in ((wrong, "401 wrong API key"), (nobody, "cannot reach http://127.0.0.1:")):
        assert result.returncode == 2 and result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("signs predict: error: ") and reason in line, line


@pytest.mark.slow  # two commands over a folder of photos
def test_evaluate_on_a_folder_answers_as_predict_does(uniform_model_file, sample_jpg, signs_jpegs, tmp_path):
    """`signs evaluate --data FOLDER` scores the answers `signs predict` gives the same photos (the hand found
    and cut out, the count weighing the network), with the network alone beside. The network here answers every
    class alike ("0" by itself); sample.jpg's hand counts five fingers, so the product says "5" for it."""
    import shutil

    folder = tmp_path / "photos"
    for label, photo in [("5", sample_jpg), ("4", sample_jpg), *((p.name[0], p) for p in signs_jpegs[:3])]:
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / label / f"{label}_{photo.name}")
    options = ["--model", uniform_model_file, "--engine", "torch-fp32", "--json"]
    predicted = json.loads(signs("predict", *options, folder).stdout)
    evaluated = signs("evaluate", *options, "--data", folder)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    truth = [Path(answer["path"]).parent.name for answer in predicted]
    assert result["n"] == len(predicted) == 5
    assert result["accuracy"] == pytest.approx(sum(a["label"] == t for a, t in zip(predicted, truth)) / 5) == 2 / 5
    assert result["network"]["accuracy"] == pytest.approx(truth.count("0") / 5) == 1 / 5  # "0" for every photo
    assert result["hands_found"] == pytest.approx(2 / 5)  # the two phone photos; 64x64 ones are not searched
    from signs_resnet.cli import _evaluation_text

    text = _evaluation_text(result)  # what the command prints without --json
    assert "accuracy 0.4000 on 5 images" in text and "the network alone: accuracy 0.2000" in text
