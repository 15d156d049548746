"""ONNX export: the `signs export` command, parity between ONNX Runtime and PyTorch, the int8 graph and its engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import onnx
import pytest
import torch

from signs_resnet.data import preprocess
from signs_resnet.inference.engines import load_engine
from signs_resnet.inference.export import (
    INPUT_NAME,
    INT8_CALIBRATION_IMAGES,
    INT8_MAX_MEAN_DIFFERENCE,
    LOGITS_NAME,
    LOGITS_TOLERANCE,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    onnx_session,
    openvino_form,
)
from signs_resnet.inference.forward import predict
from signs_resnet.model import ResNet50
from signs_resnet.model_file import load_model, save_model


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "export", "--model", str(model_file),
                             "--format", "onnx", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "max |probability difference|" in result.stdout and "max |logit difference|" in result.stdout
    return out


@pytest.mark.slow
def test_export_writes_one_complete_onnx_file_with_metadata(exported, model_file):
    assert [p.name for p in exported.parent.iterdir()] == ["model.onnx"]  # no temporary files left behind
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["classes"]) == list("012345")
    assert metadata["source_checksum"] == load_model(model_file).checksum
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME, LOGITS_NAME]


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch(exported, model_file, sample_jpg, signs_jpegs):
    """Probabilities agree within PARITY_TOLERANCE and logits within LOGITS_TOLERANCE (relative) on real
    photos and random inputs, at several batch sizes."""
    model = load_model(model_file)
    session = onnx_session(exported)
    photos = torch.stack([preprocess.prepare_image(p) for p in [sample_jpg, *signs_jpegs]])
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
    from signs_resnet.inference.export import export

    with pytest.raises(ValueError, match="unknown export format"):
        export(load_model(model_file), tmp_path / "model.tflite", "tflite")
    assert not list(tmp_path.iterdir())


# --- int8 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_exported(model_file, signs_slice, tmp_path_factory):
    """A copy of the test model with the int8 graph `signs export --format onnx-int8` writes beside it, calibrated
    on half the slice's 96 training photos and checked on the other half."""
    folder = tmp_path_factory.mktemp("int8")
    model = folder / "model.safetensors"
    shutil.copy(model_file, model)
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "export", "--model", str(model),
                             "--format", "onnx-int8", "--data", str(signs_slice)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mean |probability difference|" in result.stdout
    return model, folder / "model.int8.onnx"


@pytest.mark.slow
def test_int8_export_is_a_quantized_graph_of_this_model(int8_exported):
    model, int8 = int8_exported
    assert sorted(p.name for p in int8.parent.iterdir()) == ["model.int8.onnx", "model.safetensors"]
    proto = onnx.load(str(int8))
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["source_checksum"] == load_model(model).checksum
    assert json.loads(metadata["quantization"])["calibration_images"] == 48 < INT8_CALIBRATION_IMAGES
    assert json.loads(metadata["classes"]) == list("012345")
    operators = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    assert any(w.data_type == onnx.TensorProto.INT8 and w.dims[0] == 2048 for w in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME, LOGITS_NAME]
    # the head stays float: logits and probabilities are not rounded to a uint8 grid
    producers = {output: node.op_type for node in proto.graph.node for output in node.output}
    assert producers[OUTPUT_NAME] == "Softmax" and producers[LOGITS_NAME] == "Gemm"
    # strided 1x1 convolutions come as a subsampling and a 1x1 convolution: only the stem's 7x7 has a stride
    strides = [[a.ints for a in node.attribute if a.name == "strides"] for node in proto.graph.node
               if node.op_type == "Conv"]
    assert sum(any(s != 1 for s in stride[0]) for stride in strides if stride) == 1
    assert sum(node.op_type == "Slice" for node in proto.graph.node) == 6
    # stage 5's 3x3 convolutions as whole-map products (Gemm after graph clean-up), int8 in and int8 weights
    dequantized = {node.output[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    gemms = [node for node in proto.graph.node if node.op_type == "Gemm" and LOGITS_NAME not in node.output]
    assert len(gemms) == 3 and all(set(node.input[:2]) <= dequantized for node in gemms)
    head = next(node for node in proto.graph.node if LOGITS_NAME in node.output)
    assert head.input[1] not in dequantized  # the dense layer keeps float weights


@pytest.mark.slow
def test_openvino_form_computes_the_same_function():
    network = ResNet50().eval()
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics to fold
        for tensor in (norm.weight.data, norm.bias.data, norm.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
    rewritten = openvino_form(network, (64, 64, 3))

    def strided(net):
        return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
                and m.stride != (1, 1)]
    assert len(strided(network)) == 6 and strided(rewritten) == []
    whole_map = [m for m in rewritten.modules() if type(m).__name__ == "_WholeMapProduct"]
    assert [m.shape for m in whole_map] == [(512, 2, 2)] * 3  # stage 5's 3x3 convolutions
    images = torch.rand(4, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        torch.testing.assert_close(rewritten(images), network(images), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_int8_engine_follows_the_fp32_model_and_auto_picks_it(int8_exported, sample_jpg, signs_jpegs):
    model = load_model(int8_exported[0])
    assert load_engine(model, "auto").describe() == "openvino-int8 (int8)"
    engine = load_engine(model, "openvino-int8")
    photos = torch.stack([preprocess.prepare_image(p) for p in [sample_jpg, *signs_jpegs]])
    difference = (engine.run(photos) - predict(model, photos)).abs()
    assert difference.mean() <= INT8_MAX_MEAN_DIFFERENCE and difference.max() < 0.1, difference
    assert engine.run(photos[:1]).shape == (1, 6)


@pytest.mark.slow
def test_int8_graph_of_another_model_is_not_used(int8_exported, tmp_path):
    source, int8 = int8_exported
    model = load_model(source)
    with torch.no_grad():
        model.network.fc.bias.add_(1.0)  # another model: other weights, another checksum
    other = tmp_path / "model.safetensors"
    save_model(other, model.network, model.metadata)
    shutil.copy(int8, tmp_path / "model.int8.onnx")
    other_model = load_model(other)
    assert load_engine(other_model, "auto").describe().startswith("openvino (")
    with pytest.raises(ValueError, match="signs export .* --format onnx-int8"):
        load_engine(other_model, "openvino-int8")

