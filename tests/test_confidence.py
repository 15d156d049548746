"""Every answer says whether it is confident: a hand was found (never in a 64x64 photo, not looked for), its
reading counts as many fingers as the answer, and the top probability reaches the model's threshold (fixed on SIGNS
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
from conftest import ROOT, SHARED
from PIL import Image

from signs_resnet import answer
from signs_resnet.data import preprocess
from signs_resnet.model_file import DEFAULT_CONFIDENCE_THRESHOLD, load_model


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


NO_HAND = png(np.full((120, 160, 3), 128, dtype=np.uint8))  # a grey wall
NO_HAND_ANSWER = {"found": False, "score": None, "crop": None, "fingers": None, "counts": None, "fingers_up": None,
                  "o": None, "points": None}


def counted(count: int | None, sure: float = 0.9, searched: bool = True) -> preprocess.Framing:
    """Where a hand was found whose reading gives `count` the probability `sure` (the rest shared evenly);
    no reading for None."""
    from signs_resnet.hands.reading import Reading

    if count is None:
        return preprocess.Framing(searched, 0.9 if searched else None, (0, 0, 10, 10))
    counts = tuple(sure if c == count else (1 - sure) / 5 for c in range(6))
    return preprocess.Framing(True, 0.9, (0, 0, 10, 10), Reading((0.5,) * 5, 0.1, counts))


def test_the_threshold_travels_with_the_model_file(uniform_model_file, tmp_path):
    """Written into the model file by training (here 0.5), read back from it; a model file from before training
    stored one gets its recipe's, DEFAULT_CONFIDENCE_THRESHOLD."""
    from signs_resnet.model_file import save_model

    model = load_model(uniform_model_file)
    assert model.confidence_threshold == 0.5
    older = {key: value for key, value in model.metadata.items() if key != "confidence_threshold"}
    save_model(tmp_path / "older.safetensors", model.network, older)
    assert load_model(tmp_path / "older.safetensors").confidence_threshold == DEFAULT_CONFIDENCE_THRESHOLD == 0.998


@pytest.mark.slow  # a server of its own
def test_predict_answers_say_whether_they_are_confident(uniform_model_file, sample_jpg, tmp_path):
    """A server whose network answers every class alike, at a threshold of 0.5: the answer is the hand's reading,
    sample.jpg's hand reads five fingers, above 0.5, confident; a wall has no hand, so its answer never is."""
    from conftest import start_server

    server = start_server(uniform_model_file, tmp_path / "server.log", "--engine", "torch-fp32")
    try:
        with server.client() as client:
            body = client.post("/predict", files=[("image", ("sample.jpg", sample_jpg.read_bytes())),
                                                  ("image", ("wall.png", NO_HAND))]).json()
            documented = client.get("/openapi.json").json()["components"]["schemas"]["ImageResult"]
    finally:
        server.stop()
    for result in body["results"]:
        assert result["confident"] is (result["probability"] >= 0.5 and result["hand"]["found"]
                                       and result["hand"]["fingers"] == int(result["label"]))
    sample, wall = body["results"]
    network, landmarks = load_model(uniform_model_file).combination
    weighed = [p ** landmarks for p in sample["hand"]["counts"]]  # the network's 1/6 each cancels out
    assert (sample["label"], sample["confident"]) == ("5", True)
    assert sample["probability"] == pytest.approx(weighed[5] / sum(weighed), abs=1e-3)
    assert sample["hand"]["found"] is True and sample["hand"]["score"] > 0.5 and sample["hand"]["fingers"] == 5
    assert min(sample["hand"]["fingers_up"]) > 0.5 and len(sample["hand"]["points"]) == 21
    assert {p["label"] for p in sample["network"]} == set("012345")
    assert all(p["probability"] == pytest.approx(1 / 6, abs=1e-4) for p in sample["network"])
    assert wall["label"] in [str(c) for c in range(6)] and wall["confident"] is False
    assert wall["hand"] == NO_HAND_ANSWER
    assert {"confident", "hand"} <= set(documented["properties"]) and "confident" in documented["required"]


def test_an_answer_whose_count_the_hands_reading_contradicts_is_not_confident(model_file):
    """The rule (answer.is_confident): a sure 5 is confident where the hand reads five fingers, and not where it
    reads four, was looked for and not found, or was not looked for (a photo at the input size)."""
    model = load_model(model_file)
    model.metadata["confidence_threshold"] = 0.9
    sure_five = [0.0, 0.0, 0.0, 0.0, 0.01, 0.99]
    assert answer.is_confident(model, sure_five, counted(5))
    assert not answer.is_confident(model, sure_five, preprocess.Framing())  # no hand looked for: never confident
    assert not answer.is_confident(model, sure_five, counted(4))
    assert not answer.is_confident(model, sure_five, preprocess.Framing(True))
    unsure_five = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5 + 1e-3]
    assert not answer.is_confident(model, unsure_five, counted(5))
    assert answer.is_confident(model, [0.99, 0.01, 0, 0, 0, 0], counted(0))  # a 0 is a count too: a fist, an O


def test_the_answer_is_a_weighted_product_of_the_network_and_the_hands_reading(model_file):
    """answer.posterior: p_net^a x p_count^b with the model's weights (LoadedModel.combination). A reading tips
    an unsure answer its way and makes an answer it agrees with surer; the weights say how far each part counts;
    no reading, or a model whose classes are not SIGNS' counts, leaves the network's probabilities as they are."""
    model = load_model(model_file)
    model.metadata.update(network_weight=1.0, landmark_weight=1.0)
    unsure = [0.0, 0.0, 0.0, 0.0, 0.55, 0.45]
    weighed = answer.posterior(model, unsure, counted(5))
    assert max(range(6), key=weighed.__getitem__) == 5 and sum(weighed) == pytest.approx(1)
    five, four = 0.45 * 0.9, 0.55 * 0.02
    assert weighed[5] == pytest.approx(five / (five + four), abs=1e-6)
    assert answer.posterior(model, unsure, counted(4))[4] > 0.55  # agreeing: surer
    sure = [0.0002, 0.0002, 0.0002, 0.0002, 0.0002, 0.999]
    assert max(range(6), key=answer.posterior(model, sure, counted(4, sure=0.6)).__getitem__) == 5
    model.metadata.update(network_weight=0.2, landmark_weight=1.0)  # a network trusted less: the sure reading wins
    assert max(range(6), key=answer.posterior(model, sure, counted(4, sure=0.99)).__getitem__) == 4
    model.metadata.update(network_weight=1.0, landmark_weight=0.0)  # the reading not trusted: the network's own
    assert answer.posterior(model, unsure, counted(5)) == pytest.approx(unsure, abs=1e-9)
    for nothing_to_count in (preprocess.Framing(), preprocess.Framing(True), counted(None)):
        assert answer.posterior(model, unsure, nothing_to_count) == unsure
    assert answer.posterior(model, unsure[:5], counted(5)) == unsure[:5]  # not one per class
    model.metadata.update(network_weight=1.0, landmark_weight=1.0)
    model.classes = ["5", "4", "3", "2", "1", "0"]  # by name, not by position
    assert answer.posterior(model, unsure[::-1], counted(5)) == pytest.approx(weighed[::-1])
    model.classes = ["a", "b", "c", "d", "e", "f"]
    assert answer.posterior(model, unsure, counted(5)) == unsure


def test_the_combination_weights_travel_with_the_model_file(uniform_model_file, tmp_path):
    """Written by training (TrainConfig.network_weight, landmark_weight), read back; a model file from before
    gets DEFAULT_COMBINATION."""
    from signs_resnet.model_file import DEFAULT_COMBINATION, save_model

    model = load_model(uniform_model_file)
    assert model.combination == DEFAULT_COMBINATION
    save_model(tmp_path / "weighted.safetensors", model.network,
               model.metadata | {"network_weight": 0.4, "landmark_weight": 1.5})
    assert load_model(tmp_path / "weighted.safetensors").combination == (0.4, 1.5)


def test_an_answer_is_weighed_once_then_judged(model_file):
    """answer.decide, which every path answers through: a 5 at 70% whose hand reads five fingers is weighed
    above the threshold (0.757) and is confident, though the network's own 70% is not; its label and
    probabilities are the weighed ones."""
    model = load_model(model_file)
    model.metadata.update(confidence_threshold=0.757, network_weight=1.0, landmark_weight=1.0)
    network = [0.06, 0.06, 0.06, 0.06, 0.06, 0.7]
    five = counted(5)
    given = answer.decide(model, network, five)
    assert given.probabilities == answer.posterior(model, network, five) and given.probabilities[5] > 0.95
    assert (given.label, given.confident) == ("5", True)
    assert not answer.is_confident(model, network, five)  # the network's own probability does not reach it
    no_count = answer.decide(model, network, preprocess.Framing())
    assert no_count == type(given)(network, "5", False)  # no reading: as the network says
    unsure_four = [0.0, 0.0, 0.0, 0.0, 0.6, 0.4]
    assert answer.decide(model, unsure_four, five).label == "5"  # the reading tips it


def _sure_of(model, index: int, probability: float = 0.9):
    """The model's network, its dense layer set to answer class `index` at `probability` (the rest shared
    evenly) whatever the photo, at the model's temperature."""
    import copy
    import math

    import torch

    network = copy.deepcopy(model.network)
    rest = (1 - probability) / (len(model.classes) - 1)
    temperature = float(model.metadata.get("temperature", 1.0))
    with torch.no_grad():
        network.fc.weight.zero_()
        network.fc.bias.copy_(torch.tensor([temperature * math.log(probability if c == index else rest)
                                            for c in range(len(model.classes))]))
    return network


def _photo_showing(fingers: int) -> Path:
    """The first real/hands_frames photo of class `fingers` whose hand's reading counts that many fingers."""
    for photo in sorted((SHARED / "real" / "hands_frames" / str(fingers)).glob("*.jpg")):
        if preprocess.prepare(photo)[1].fingers == fingers:
            return photo
    pytest.skip(f"no real/hands_frames/{fingers} photo showing {fingers} fingers")


@pytest.mark.slow
def test_every_path_answers_with_the_count_weighed_in(model_file, sample_jpg, tmp_path):
    """A server (and the CLI) whose network answers every photo "4" at 90%, threshold 0.95. sample.jpg's hand
    reads five fingers: its "5" is weighed up, the "4" kept, and not confident. A photo whose hand reads four: the
    "4" is weighed up past the threshold the network's 90% misses, and confident. /predict, the CLI and the
    Open Inference Protocol (where the framing travels from the decoded input to the answer) give exactly
    answer.decide's probabilities; FP32 input, framed by the client, has no count, and its answers are
    the network's own 90%, not confident."""
    import base64

    from conftest import start_server

    from signs_resnet.inference.forward import predict
    from signs_resnet.model_file import save_model

    model = load_model(model_file)
    four = model.classes.index("4")
    save_model(tmp_path / "model.safetensors", _sure_of(model, four),
               model.metadata | {"confidence_threshold": 0.95, "network_weight": 1.0, "landmark_weight": 1.0})
    sure = load_model(tmp_path / "model.safetensors")
    photos = [sample_jpg, _photo_showing(4)]
    prepared = [preprocess.prepare(photo) for photo in photos]
    network = [predict(sure, image[None])[0].tolist() for image, _ in prepared]
    given = [answer.decide(sure, row, framing) for row, (_, framing) in zip(network, prepared)]
    assert [framing.fingers for _, framing in prepared] == [5, 4] and network[0][four] == pytest.approx(0.9, abs=1e-4)
    assert [(a.label, a.confident) for a in given] == [("4", False), ("4", True)]
    five = sure.classes.index("5")
    assert given[0].probabilities[five] > network[0][five] and given[1].probabilities[four] > 0.95
    server = start_server(tmp_path / "model.safetensors", tmp_path / "server.log", "--engine", "torch-fp32")
    try:
        with server.client() as client:
            results = client.post("/predict", files=[("image", (p.name, p.read_bytes())) for p in photos]).json()[
                "results"]
            for result, expected, (_, framing) in zip(results, given, prepared):
                assert (result["label"], result["confident"]) == (expected.label, expected.confident)
                assert result["hand"]["fingers"] == framing.fingers
                served = {p["label"]: p["probability"] for p in result["predictions"]}
                assert [served[name] for name in sure.classes] == pytest.approx(expected.probabilities, abs=1e-4)
            encoded = [base64.b64encode(p.read_bytes()).decode() for p in photos]
            request = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": encoded}]}
            outputs = {o["name"]: o["data"] for o in client.post("/v2/models/signs-resnet50/infer",
                                                                 json=request).json()["outputs"]}
            assert outputs["label"] == ["4", "4"] and outputs["confident"] == [False, True]
            assert outputs["probabilities"] == pytest.approx([p for a in given for p in a.probabilities], abs=1e-4)
            fp32 = {"inputs": [{"name": "input", "shape": [2, 3, 64, 64], "datatype": "FP32",
                                "data": [v for image, _ in prepared for v in image.flatten().tolist()]}]}
            outputs = {o["name"]: o["data"] for o in client.post("/v2/models/signs-resnet50/infer",
                                                                 json=fp32).json()["outputs"]}
            assert outputs["label"] == ["4", "4"] and outputs["confident"] == [False, False]  # 90% < 0.95
            assert outputs["probabilities"] == pytest.approx([p for row in network for p in row], abs=1e-4)
    finally:
        server.stop()
    command = [sys.executable, "-m", "signs_resnet", "predict", "--model", str(tmp_path / "model.safetensors"),
               "--engine", "torch-fp32", "--json", *map(str, photos)]
    answers = json.loads(subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                                        check=True).stdout)
    assert [(a["label"], a["confident"]) for a in answers] == [("4", False), ("4", True)]
    for reported, expected in zip(answers, given):
        assert [reported["probabilities"][name] for name in sure.classes] == pytest.approx(expected.probabilities,
                                                                                        abs=1e-4)


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
               {"path": "d.jpg", "label": "0", "probability": 0.9, "confident": True, "hand": hand | {"fingers": 0}}]
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
        counted_otherwise = answer.finger_count(label) not in (None, 5)
        assert page.is_visible("#count") is counted_otherwise
        if counted_otherwise:
            assert "shows 5 fingers" in page.inner_text("#count") and page.is_visible("#unsure")
        # why: the network's own answer and the hand's reading, each finger it sees held up
        why = page.inner_text("#parts")
        assert "the network alone:" in why and "the hand's reading: 5" in why
        assert "up: thumb, index, middle, ring, little" in why
        browser.close()
