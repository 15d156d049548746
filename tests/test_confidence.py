"""Every answer says whether it is confident: a hand was found (or not looked for, in a 64x64 photo), its points
show as many fingers as the answer counts, and the top probability reaches the model's threshold (fixed on SIGNS
data). The API, the Open Inference Protocol, the CLI
and the web page; an image with no hand at all is answered, not confident, and says no hand was found."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SHARED
from signs_resnet import data
from signs_resnet.predict import DEFAULT_CONFIDENCE_THRESHOLD, load_model


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


NO_HAND = png(np.full((120, 160, 3), 128, dtype=np.uint8))  # a grey wall
NO_HAND_ANSWER = {"found": False, "score": None, "crop": None, "fingers": None}


def test_the_threshold_travels_with_the_model(model_file):
    model = load_model(model_file)
    assert model.confidence_threshold == model.metadata.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD)
    model.metadata["confidence_threshold"] = 0.25
    assert model.confidence_threshold == 0.25


def test_predict_answers_say_whether_they_are_confident(client, sample_jpg, model_file):
    threshold = load_model(model_file).confidence_threshold
    body = client.post("/predict", files=[("image", ("sample.jpg", sample_jpg.read_bytes())),
                                          ("image", ("wall.png", NO_HAND))]).json()
    for result in body["results"]:
        assert result["confident"] is (result["probability"] >= threshold and result["hand"]["found"]
                                       and result["hand"]["fingers"] == int(result["label"]))
    sample, wall = body["results"]
    assert sample["hand"]["found"] is True and sample["hand"]["score"] > 0.5
    assert wall["label"] in [str(c) for c in range(6)] and wall["confident"] is False
    assert wall["hand"] == NO_HAND_ANSWER
    documented = client.get("/openapi.json").json()["components"]["schemas"]["ImageResult"]
    assert {"confident", "hand"} <= set(documented["properties"]) and "confident" in documented["required"]


def test_an_answer_whose_count_the_hands_points_contradict_is_not_confident(model_file):
    """The rule (LoadedModel.is_confident): a sure 5 is confident where the hand shows five fingers or was
    not looked for, and not where it shows four or was looked for and not found."""
    from signs_resnet.data import Framing

    model = load_model(model_file)
    model.metadata["confidence_threshold"] = 0.9
    sure_five = [0.0, 0.0, 0.0, 0.0, 0.01, 0.99]
    assert model.is_confident(sure_five, Framing(True, 0.9, (0, 0, 10, 10), 5))
    assert model.is_confident(sure_five, Framing())
    assert not model.is_confident(sure_five, Framing(True, 0.9, (0, 0, 10, 10), 4))
    assert not model.is_confident(sure_five, Framing(True))
    unsure_five = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5 + 1e-3]
    assert not model.is_confident(unsure_five, Framing(True, 0.9, (0, 0, 10, 10), 5))


@pytest.mark.slow
def test_an_answer_the_hands_count_contradicts_is_not_confident_over_predict_and_v2(model_file, sample_jpg,
                                                                                  tmp_path):
    """A server whose model's threshold is 0 and whose classes are renamed so that it answers sample.jpg "4":
    the photo's hand shows five fingers, so the answer is not confident, in /predict and in the Open Inference
    Protocol (where the photo's framing travels from the decoded input to the confident output)."""
    import base64

    from conftest import start_server
    from signs_resnet.predict import predict, save_model

    model = load_model(model_file)
    answer = int(predict(model, data.prepare(sample_jpg)[0][None]).argmax())
    classes = list(model.classes)
    four = classes.index("4")
    classes[answer], classes[four] = classes[four], classes[answer]
    save_model(tmp_path / "model.safetensors", model.network,
               model.metadata | {"confidence_threshold": 0.0, "classes": classes})
    server = start_server(tmp_path / "model.safetensors", tmp_path / "server.log", "--engine", "torch-fp32")
    try:
        with server.client() as client:
            [result] = client.post("/predict", files=[("image", ("sample.jpg", sample_jpg.read_bytes()))]).json()[
                "results"]
            assert (result["label"], result["hand"]["fingers"], result["confident"]) == ("4", 5, False)
            image = base64.b64encode(sample_jpg.read_bytes()).decode()
            request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
            outputs = {o["name"]: o["data"] for o in client.post("/v2/models/signs-resnet50/infer",
                                                                 json=request).json()["outputs"]}
            assert outputs["label"] == ["4"] and outputs["confident"] == [False]
            fp32 = {"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                "data": data.prepare(sample_jpg)[0].flatten().tolist()}]}
            outputs = {o["name"]: o["data"] for o in client.post("/v2/models/signs-resnet50/infer",
                                                                 json=fp32).json()["outputs"]}
            assert outputs["label"] == ["4"] and outputs["confident"] == [True]  # no hand looked for: no count
    finally:
        server.stop()


def test_v2_answers_carry_a_confident_output(client):
    import base64

    image = base64.b64encode(NO_HAND).decode()
    request = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [image, image]}]}
    outputs = {o["name"]: o for o in client.post("/v2/models/signs-resnet50/infer", json=request).json()["outputs"]}
    assert outputs["confident"] == {"name": "confident", "datatype": "BOOL", "shape": [2], "data": [False, False]}
    metadata = client.get("/v2/models/signs-resnet50").json()
    assert {"name": "confident", "datatype": "BOOL", "shape": [-1]} in metadata["outputs"]
    only = client.post("/v2/models/signs-resnet50/infer", json=request | {"outputs": [{"name": "confident"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["confident"]


@pytest.mark.slow
def test_the_cli_says_whether_each_answer_is_confident(model_file, tmp_path):
    (tmp_path / "wall.png").write_bytes(NO_HAND)
    command = [sys.executable, "-m", "signs_resnet", "predict", "--model", str(model_file), "--engine", "torch-fp32"]
    run = lambda *args: subprocess.run([*command, *args], capture_output=True, text=True, cwd=ROOT,  # noqa: E731
                                       timeout=120, check=False)
    [answer] = json.loads(run("--json", tmp_path / "wall.png").stdout)
    assert answer["confident"] is False and answer["hand"] == NO_HAND_ANSWER
    assert run(tmp_path / "wall.png").stdout.strip().endswith(", not confident, no hand found)")
    header, row = run("--csv", tmp_path / "wall.png").stdout.splitlines()
    assert header.split(",")[3] == "confident" and row.split(",")[3] == "no"


def test_the_cli_line_says_when_the_hand_shows_another_count():
    from signs_resnet.cli import format_results

    hand = {"found": True, "score": 0.9, "crop": [0, 0, 10, 10], "fingers": 5}
    results = [{"path": "a.jpg", "label": "4", "probability": 0.9, "confident": False, "hand": hand},
               {"path": "b.jpg", "label": "5", "probability": 0.9, "confident": True, "hand": hand},
               {"path": "c.jpg", "label": "2", "probability": 0.9, "confident": False, "hand": hand | {"fingers": 1}},
               {"path": "d.jpg", "label": "0", "probability": 0.9, "confident": True, "hand": hand}]  # "0": no count
    assert format_results(results, list("012345"), "text").splitlines() == [
        "a.jpg: 4 (90.0%, not confident, the hand shows 5 fingers)", "b.jpg: 5 (90.0%)",
        "c.jpg: 2 (90.0%, not confident, the hand shows 1 finger)", "d.jpg: 0 (90.0%)"]


@pytest.mark.slow
def test_the_web_page_says_when_it_is_not_confident(server, tmp_path):
    from test_web import ARGS, CHROMIUM

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    (tmp_path / "wall.png").write_bytes(NO_HAND)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file", str(tmp_path / "wall.png"))
        page.wait_for_selector("#result.shown", timeout=30_000)
        assert page.is_visible("#unsure") and "Not confident" in page.inner_text("#unsure")
        assert not page.inner_text("#confidence").endswith("sure")
        assert page.is_visible("#no-hand") and "No hand found" in page.inner_text("#no-hand")
        frames = sorted((SHARED / "real" / "hands_frames" / "5").glob("*.jpg"))
        if frames:  # a webcam frame: the hand found, and the square cut around it is what the model saw
            page.evaluate("document.getElementById('result').classList.remove('shown')")
            page.set_input_files("#file", str(frames[0]))
            page.wait_for_selector("#result.shown", timeout=30_000)
            assert not page.is_visible("#no-hand")
            assert "cut out" in page.inner_text("#model-input-caption")
        # the phone photo's hand shows five fingers: said when the answer counts otherwise, and only then
        page.evaluate("document.getElementById('result').classList.remove('shown')")
        page.set_input_files("#file", str(SHARED / "samples" / "sample.jpg"))
        page.wait_for_selector("#result.shown", timeout=30_000)
        label = page.inner_text("#digit")
        counted_otherwise = data.finger_count(label) not in (None, 5)
        assert page.is_visible("#count") is counted_otherwise
        if counted_otherwise:
            assert "shows 5 fingers" in page.inner_text("#count") and page.is_visible("#unsure")
        browser.close()
