"""ONNX export: the `signs export` command, and parity between ONNX Runtime and PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch

from signs_resnet import data
from signs_resnet.export import (INPUT_NAME, LOGITS_NAME, LOGITS_TOLERANCE, OUTPUT_NAME, PARITY_TOLERANCE,
                                 onnx_session)
from signs_resnet.predict import load_model, predict


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "export", "--model", str(model_file),
                             "--format", "onnx", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "max |probability difference|" in result.stdout and "max |logit difference|" in result.stdout
    return out


def test_export_writes_one_complete_onnx_file_with_metadata(exported, model_file):
    assert [p.name for p in exported.parent.iterdir()] == ["model.onnx"]  # no temporary files left behind
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["classes"]) == list("012345")
    assert metadata["source_checksum"] == load_model(model_file).checksum
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME, LOGITS_NAME]


def test_onnx_runtime_matches_pytorch(exported, model_file, sample_jpg, signs_jpegs):
    """Probabilities agree within PARITY_TOLERANCE and logits within LOGITS_TOLERANCE (relative) on real
    photos and random inputs, at several batch sizes."""
    model = load_model(model_file)
    session = onnx_session(exported)
    photos = torch.stack([data.prepare_image(p) for p in [sample_jpg, *signs_jpegs]])
    noise = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for images in (photos, noise, photos[:1]):
        expected = predict(model, images)
        with torch.inference_mode():
            expected_logits = model.network(images)
        actual, logits = (torch.from_numpy(a) for a in session.run([OUTPUT_NAME, LOGITS_NAME],
                                                                   {INPUT_NAME: images.numpy()}))
        assert actual.shape == expected.shape
        assert torch.allclose(actual, expected, atol=PARITY_TOLERANCE, rtol=0), (actual - expected).abs().max()
        scale = expected_logits.abs().max()
        assert (logits - expected_logits).abs().max() <= LOGITS_TOLERANCE * scale
        assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_export_refuses_unknown_formats(model_file, tmp_path):
    from signs_resnet.export import export

    with pytest.raises(ValueError, match="unknown export format"):
        export(load_model(model_file), tmp_path / "model.tflite", "tflite")
    assert not list(tmp_path.iterdir())
