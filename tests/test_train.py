"""Real training on a small slice of the real photos."""

import json
import subprocess
import sys

import pytest
import torch

from signs_resnet import load_model
from signs_resnet.data import datasets, preprocess
from signs_resnet.hands import detector
from signs_resnet.inference.forward import predict
from signs_resnet.training import synthetic, train
from signs_resnet.training.config import TrainConfig, check_config
from signs_resnet.training.evaluate import evaluate, fit_temperature
from signs_resnet.training.train import fit, recalibrate_batch_norm


@pytest.fixture(scope="module")
def trained(tmp_path_factory, signs_slice):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(data=str(signs_slice), out=str(out), epochs=6, batch_size=16, learning_rate=1e-3,
                         augment=False, label_smoothing=0.0, progress=False, checkpoint_every_s=0)
    return out, fit(config)


@pytest.mark.slow
def test_training_learns(trained):
    out, summary = trained
    history = load_model(out / "model.safetensors").metadata["history"]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["train_accuracy"] > 0.6  # chance is 1/6
    assert summary["test"]["n"] == 48
    assert detector.use_int8(True) is True  # fp32 while it trained, the process's setting given back


@pytest.mark.slow
def test_checkpoints_follow_the_interval_and_metrics_every_epoch(tmp_path, tiny_slice):
    checkpoints = []
    write_epoch_files = train._write_epoch_files

    def record(folder, checkpoint, history):
        checkpoints.append(checkpoint is not None)
        write_epoch_files(folder, checkpoint, history)

    config = TrainConfig(data=str(tiny_slice), out=str(tmp_path), epochs=3, batch_size=32, augment=False,
                         progress=False, checkpoint_every_s=3600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_write_epoch_files", record)
        fit(config)
    assert checkpoints == [False, False, False] and not (tmp_path / "checkpoint.safetensors").exists()
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4
    assert load_model(tmp_path / "model.safetensors").metadata["training"]["checkpoint_every_s"] == 3600


@pytest.mark.slow
def test_training_writes_the_model_metrics_and_plots(trained):
    out, summary = trained
    assert {"model.safetensors", "checkpoint.safetensors", "metrics.csv", "curves.png", "confusion.png"} <= {
        p.name for p in out.iterdir()}
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_accuracy") and len(lines) == 7
    model = load_model(out / "model.safetensors")
    assert model.classes == ["0", "1", "2", "3", "4", "5"] and model.input_shape == (64, 64, 3)
    assert model.metadata["training"]["epochs"] == 6 and model.metadata["preprocessing"]["scale"] == "x / 255"
    assert model.metadata["metrics"]["test"]["accuracy"] == summary["test"]["accuracy"]
    assert model.checksum == summary["checksum"]


@pytest.mark.slow
def test_inference_mode_accuracy_is_close_to_training_mode(trained, signs_slice):
    """The original's batch-norm defect: inference-mode accuracy must not collapse."""
    out, _ = trained
    network = load_model(out / "model.safetensors").network
    train = datasets.load_splits(signs_slice).train
    eval_accuracy = evaluate(network, train)["accuracy"]
    network.train()
    with torch.no_grad():
        train_mode_accuracy = (network(preprocess.scale(train.images)).argmax(1) == train.labels).float().mean().item()
    assert eval_accuracy > 0.6
    assert abs(eval_accuracy - train_mode_accuracy) < 0.1


@pytest.mark.slow
def test_recalibration_fixes_stale_batch_norm_statistics(trained, signs_slice):
    out, _ = trained
    network = load_model(out / "model.safetensors").network
    train = datasets.load_splits(signs_slice).train
    good = evaluate(network, train)["accuracy"]
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
            module.running_var.fill_(3.0)
    assert evaluate(network, train)["accuracy"] < good
    recalibrate_batch_norm(network, train.images, 32, torch.device("cpu"), "fp32")
    assert evaluate(network, train)["accuracy"] == pytest.approx(good, abs=0.05)


def signs(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "signs_resnet", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.slow
def test_cli_evaluate_and_predict(trained, signs_slice, sample_jpg, tmp_path):
    out, summary = trained
    model = out / "model.safetensors"
    result = signs("evaluate", "--model", model, "--data", signs_slice, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 48 and report["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert set(report["per_class"]) == {"0", "1", "2", "3", "4", "5"}
    assert (out / "confusion.png").stat().st_size > 1000

    result = signs("predict", "--model", model, "--json", sample_jpg, sample_jpg)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert len(predictions) == 2 and predictions[0]["path"] == str(sample_jpg)
    assert predictions[0]["label"] in model_classes() and 0 < predictions[0]["probability"] <= 1
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def model_classes():
    return [str(i) for i in range(6)]


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a model at all", None])
def test_cli_refuses_bad_model_files_without_a_traceback(tmp_path, trained, sample_jpg, content):
    out, _ = trained
    path = tmp_path / "model.safetensors"
    if content is None:  # truncated real model
        path.write_bytes((out / "model.safetensors").read_bytes()[:100_000])
    else:
        path.write_bytes(content)
    for command in (["evaluate", "--model", path], ["predict", "--model", path, sample_jpg]):
        result = signs(*command)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_bad_data_path_and_bad_image(trained, tmp_path):
    out, _ = trained
    result = signs("train", "--data", tmp_path / "missing", "--out", tmp_path / "run", "--no-progress")
    assert result.returncode == 2 and "missing: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    result = signs("predict", "--model", out / "model.safetensors", "--json", tmp_path / "junk.jpg")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "junk.jpg" in json.loads(result.stdout)[0]["error"]


@pytest.mark.slow
def test_failed_training_does_not_overwrite_an_existing_model(trained, tmp_path):
    out, _ = trained
    before = (out / "model.safetensors").read_bytes()
    (tmp_path / "bad.h5").write_bytes(b"junk")
    result = signs("train", "--data", tmp_path / "bad.h5", "--out", out, "--no-progress")
    assert result.returncode == 2 and "bad.h5" in result.stderr
    assert (out / "model.safetensors").read_bytes() == before


def test_fitted_temperature_recovers_an_overconfident_models_scale():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 6, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits * 3, labels) == pytest.approx(3, rel=0.1)  # 3x too confident
    assert fit_temperature(logits, labels) == pytest.approx(1, rel=0.1)


@pytest.mark.slow
def test_the_model_carries_the_recipes_temperature(trained):
    out, summary = trained
    model = load_model(out / "model.safetensors")
    assert model.metadata["temperature"] == TrainConfig().temperature == summary["temperature"]
    logits = model.network(preprocess.scale(datasets.load_splits(None).test.images[:4])).float()
    assert torch.allclose(predict(model, preprocess.scale(datasets.load_splits(None).test.images[:4])),
                          torch.softmax(logits / model.metadata["temperature"], 1), atol=1e-4)


@pytest.mark.parametrize("capabilities, expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": False, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": False, "avx512_bf16": False, "avx512_f": True}, "fp32"),  # bf16 emulated: slower than fp32
    ({"architecture": "arm64", "neon": True}, "fp32"),
])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert train.resolve_precision("auto", torch.device("cpu")) == expected
    assert train.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert train.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be"):
        train.resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.slow
def test_the_model_records_the_precision_it_trained_in(trained):
    out, _ = trained
    recorded = load_model(out / "model.safetensors").metadata["training"]["precision"]
    assert recorded == train.resolve_precision("auto", torch.device("cpu")) and recorded in ("bf16", "fp32")


def test_the_background_share_is_constant_or_falls_to_zero_by_the_last_step():
    constant = TrainConfig(background_probability=0.6, background_schedule="constant")
    linear = TrainConfig(background_probability=0.6, background_schedule="linear")
    assert [train.scheduled(0.6, s, 100, constant) for s in (0, 50, 99)] == [0.6, 0.6, 0.6]
    assert [train.scheduled(0.6, s, 100, linear) for s in (0, 50, 100)] == pytest.approx([0.6, 0.3, 0.0])
    with pytest.raises(ValueError, match="background_schedule must be one of constant, linear"):
        check_config(TrainConfig(background_schedule="cosine"))


class Recorder(torch.nn.Module):
    """A tiny classifier that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 64 * 64, 6)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_thumbless_share_of_the_fours_is_swapped_for_fives_without_a_thumb(share, monkeypatch):
    """What the network is given and told: at share 1 every 4 is a thumbless 5 (drawn from all of them), at 0
    none, in between about that share; the labels and every other class as they are."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 64, 64), dtype=torch.uint8, generator=generator)
    labels = torch.arange(96) % 6
    thumbless = synthetic.Thumbless(torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=generator), 4)
    model = Recorder()
    told = []
    loss = train.F.cross_entropy
    monkeypatch.setattr(train.F, "cross_entropy", lambda logits, y, **kw: told.append(y) or loss(logits, y, **kw))
    config = TrainConfig(augment=False, batch_size=16, thumbless_probability=share, progress=False)
    train.train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), images, labels, config,
                          torch.Generator().manual_seed(1), 0, 6, torch.device("cpu"), thumbless=thumbless)
    seen, told = torch.cat(model.seen).flatten(1), torch.cat(told)
    originals = (seen[:, None] == preprocess.scale(images).flatten(1)[None]).all(2)
    painted = (seen[:, None] == preprocess.scale(thumbless.images).flatten(1)[None]).all(2)
    assert bool((originals.any(1) ^ painted.any(1)).all())
    assert torch.equal(told[originals.any(1)], labels[originals.float().argmax(1)][originals.any(1)])
    assert bool((told[painted.any(1)] == 4).all())
    assert sorted(told.tolist()) == sorted(labels.tolist())  # each photo once, its label kept
    assert abs(painted.any(1).sum().item() / (labels == 4).sum().item() - share) <= 0.25
    if share == 1.0:
        assert len(set(painted.float().argmax(1)[painted.any(1)].tolist())) > 1  # drawn, not always the first


def test_without_signs_fives_to_paint_the_recipe_says_why_and_trains_without_them():
    images = torch.zeros((4, 3, 64, 64), dtype=torch.uint8)
    assert "not SIGNS' 4 and 5 (cat, dog)" in synthetic.Thumbless.of(images, torch.tensor([0, 1, 0, 1]), ["cat", "dog"])
    assert "holds no photo of a 5" in synthetic.Thumbless.of(images, torch.tensor([0, 1, 4, 4]), list("012345"))
    assert synthetic.thumbless_photos(images[:0])[1].shape == (0,)
    assert "no hand was found" in synthetic.Thumbless.of(images, torch.tensor([4, 5, 4, 5]), list("012345"))


@pytest.mark.parametrize("setting, message", [
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"batch_size": -1}, "batch_size must be at least 1"),
    ({"learning_rate": float("nan")}, "learning_rate must be above 0, got nan"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"background_probability": -0.1}, "background_probability must be in"),
    ({"thumbless_probability": 1.5}, r"thumbless_probability must be in \[0, 1\], got 1.5"),
    ({"temperature": 0.0}, "temperature must be above 0"),
])
def test_settings_out_of_range_are_refused_before_training(setting, message):
    with pytest.raises(ValueError, match=message):
        train.fit(TrainConfig(out="/nonexistent/never-written", **setting))
    check_config(TrainConfig())  # the defaults are in range


def test_the_cli_refuses_a_setting_out_of_range_in_one_line(tmp_path):
    command = [sys.executable, "-m", "signs_resnet", "train", "--epochs", "0", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "signs train: error: epochs must be at least 1, got 0"
    assert not (tmp_path / "run").exists()
