"""Importing the original Keras model: exact on a hand-made Keras 2 file, equal to Keras 3, clear on bad input.

The Keras 2 layout is written here with h5py from the original code's layer names; the Keras 3
files are written by Keras (torch backend) from the original code, when Keras is installed.
"""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from signs_resnet.cli import main
from signs_resnet.data import preprocess
from signs_resnet.inference.forward import predict
from signs_resnet.keras_import import import_keras
from signs_resnet.model_file import load_model

# The original code's stages, written out from its source rather than taken from model.STAGES.
FILTERS = {2: (64, 64, 256), 3: (128, 128, 512), 4: (256, 256, 1024), 5: (512, 512, 2048)}
BLOCKS = {2: "abc", 3: "abcd", 4: "abcdef", 5: "abc"}
BATCH_NORM = ("gamma", "beta", "moving_mean", "moving_variance")
PARITY_ATOL = 1e-4  # on softmax probabilities

# Keras 3 on numpy 2 warns about its own __array__ on every variable it reads.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def original_layer_shapes(classes: int = 6) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every weight of the original Keras ResNet50 (64 x 64 x 3 input), by layer and weight name."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}

    def conv_bn(conv: str, bn: str, size: int, in_channels: int, out_channels: int) -> None:
        shapes[conv] = {"kernel": (size, size, in_channels, out_channels), "bias": (out_channels,)}
        shapes[bn] = {name: (out_channels,) for name in BATCH_NORM}

    conv_bn("conv1", "bn_conv1", 7, 3, 64)
    in_channels = 64
    for stage, blocks in BLOCKS.items():
        f1, f2, f3 = FILTERS[stage]
        for block in blocks:
            name = f"{stage}{block}_branch"
            conv_bn(f"res{name}2a", f"bn{name}2a", 1, in_channels, f1)
            conv_bn(f"res{name}2b", f"bn{name}2b", 3, f1, f2)
            conv_bn(f"res{name}2c", f"bn{name}2c", 1, f2, f3)
            if block == "a":
                conv_bn(f"res{name}1", f"bn{name}1", 1, in_channels, f3)
            in_channels = f3
    shapes[f"fc{classes}"] = {"kernel": (2048, classes), "bias": (classes,)}
    return shapes


@pytest.fixture(scope="module")
def keras_layers() -> dict[str, dict[str, np.ndarray]]:
    """Random weights for every layer, distinct everywhere, variances positive."""
    rng = np.random.default_rng(0)
    layers = {}
    for layer, weights in original_layer_shapes().items():
        layers[layer] = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in weights.items()}
        if "moving_variance" in weights:
            layers[layer]["moving_variance"] = np.abs(layers[layer]["moving_variance"]) + 0.5
    return layers


def write_keras2(path, layers: dict[str, dict[str, np.ndarray]], full_model: bool = True, scoped: str = ""):
    """The Keras 2 HDF5 layout: [model_weights/]<layer>/<layer>/kernel:0 with layer_names and weight_names.

    `scoped` names a layer whose weights carry a TensorFlow name-scope suffix (`fc6_1/kernel:0`), as
    they do when the model was built twice in one session.
    """
    with h5py.File(path, "w") as file:
        file.attrs["keras_version"] = b"2.2.2"
        file.attrs["backend"] = b"tensorflow"
        root = file
        if full_model:
            config = {"class_name": "Model", "config": {"name": "ResNet50", "layers": [
                {"name": "input_1", "class_name": "InputLayer", "config": {"batch_input_shape": [None, 64, 64, 3]}}]}}
            file.attrs["model_config"] = json.dumps(config).encode()
            root = file.create_group("model_weights")
        root.attrs["layer_names"] = [name.encode() for name in ["input_1", *layers]]
        root.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer, weights in layers.items():
            group = root.create_group(layer)
            prefix = f"{layer}_1" if layer == scoped else layer
            names = [f"{prefix}/{name}:0" for name in weights]
            group.attrs["weight_names"] = [name.encode() for name in names]
            for name, value in zip(names, weights.values(), strict=True):
                group.create_dataset(name, data=value)
    return path


@pytest.mark.slow  # Keras builds and runs whole models
@pytest.mark.parametrize("full_model", [True, False], ids=["model.save", "save_weights"])
def test_keras2_file_maps_every_weight_by_its_original_name(tmp_path, keras_layers, full_model):
    path = write_keras2(tmp_path / "res.h5", keras_layers, full_model, scoped="fc6")
    import_keras(path, tmp_path / "out" / "model.safetensors")
    model = load_model(tmp_path / "out" / "model.safetensors")
    state = model.network.state_dict()

    def kernel(layer: str) -> torch.Tensor:
        return torch.from_numpy(keras_layers[layer]["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW

    def check(ours: str, conv: str, bn: str) -> list[str]:
        keras_bn = {name: torch.from_numpy(keras_layers[bn][name]) for name in BATCH_NORM}
        conv_bias = torch.from_numpy(keras_layers[conv]["bias"])
        expected = {f"{ours[0]}.weight": kernel(conv), f"{ours[1]}.weight": keras_bn["gamma"],
                    f"{ours[1]}.bias": keras_bn["beta"], f"{ours[1]}.running_var": keras_bn["moving_variance"],
                    f"{ours[1]}.running_mean": keras_bn["moving_mean"] - conv_bias}
        for key, value in expected.items():
            assert torch.equal(state[key], value), f"{key} does not hold {conv}/{bn}"
        return list(expected)

    checked = check(("stage1.1", "stage1.2"), "conv1", "bn_conv1")
    for stage, blocks in BLOCKS.items():
        for index, block in enumerate(blocks):
            for branch in ["branch2a", "branch2b", "branch2c"] + (["branch1"] if block == "a" else []):
                ours, theirs = f"stage{stage}.{index}.{branch}", f"{stage}{block}_{branch}"
                checked += check((f"{ours}.0", f"{ours}.1"), f"res{theirs}", f"bn{theirs}")
    assert torch.equal(state["fc.weight"], torch.from_numpy(keras_layers["fc6"]["kernel"]).T)
    assert torch.equal(state["fc.bias"], torch.from_numpy(keras_layers["fc6"]["bias"]))
    checked += ["fc.weight", "fc.bias"]
    # Spot checks that do not go through the loop above.
    assert torch.equal(state["stage4.5.branch2b.0.weight"], kernel("res4f_branch2b"))
    assert torch.equal(state["stage3.0.branch1.0.weight"], kernel("res3a_branch1"))
    assert sorted(checked) == sorted(k for k in state if not k.endswith("num_batches_tracked"))

    assert model.classes == ["0", "1", "2", "3", "4", "5"]
    assert model.input_shape == (64, 64, 3)
    assert model.metadata["preprocessing"] == preprocess.PREPROCESSING
    assert model.metadata["source"]["keras_file"] == "res.h5"
    assert model.metadata["source"]["keras_version"] == "2.2.2"


@pytest.mark.slow
def test_cli_import_then_predict_and_evaluate(tmp_path, keras_layers, capsys):
    path = write_keras2(tmp_path / "res.h5", keras_layers)
    assert main(["import-keras", str(path), "--out", str(tmp_path / "imported")]) == 0
    model_path = tmp_path / "imported" / "model.safetensors"
    assert "imported from" in capsys.readouterr().out

    image = tmp_path / "hand.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--model", str(model_path), "--json", str(image)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["label"] in [str(i) for i in range(6)]

    test_file = tmp_path / "test_signs.h5"
    with h5py.File(test_file, "w") as file:
        file["test_set_x"] = np.random.default_rng(2).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
        file["test_set_y"] = np.arange(6)
        file["list_classes"] = np.arange(6)
    assert main(["evaluate", "--model", str(model_path), "--data", str(test_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 6


# --- bad input: a one-line error naming the problem, nothing written --------------------------------------


def without(layers: dict, *names: str) -> dict:
    return {layer: weights for layer, weights in layers.items() if layer not in names}


def replaced(layers: dict, layer: str, name: str, value: np.ndarray) -> dict:
    return layers | {layer: layers[layer] | {name: value}}


def dropped(layers: dict, layer: str, name: str) -> dict:
    return layers | {layer: {k: v for k, v in layers[layer].items() if k != name}}


def keras_applications_naming(layers: dict) -> dict:
    """Another architecture: keras.applications.ResNet50's layer names (conv1_conv, conv2_block1_1_conv, ...)."""
    return {"conv1_conv": layers["conv1"], "conv1_bn": layers["bn_conv1"],
            "conv2_block1_1_conv": layers["res2a_branch2a"], "predictions": layers["fc6"]}


def deeper(layers: dict) -> dict:
    """The original naming with one block more in stage 4 (as a ResNet101 would have)."""
    return layers | {"res4g_branch2a": layers["res4b_branch2a"], "bn4g_branch2a": layers["bn4b_branch2a"]}


BAD_LAYERS = {  # case: (the layers written, the error message's telling part)
    "missing layer": (lambda layers: without(layers, "res4c_branch2b"),
                      "not the original SIGNS ResNet50 (missing 1 of its 107 layers: 'res4c_branch2b')"),
    "missing weight": (lambda layers: dropped(layers, "bn3b_branch2c", "gamma"),
                       "layer 'bn3b_branch2c' has no 'gamma' (found: beta, moving_mean, moving_variance)"),
    "wrong shape": (lambda layers: replaced(layers, "res3a_branch2b", "kernel", np.zeros((3, 3, 128, 64), "f4")),
                    "res3a_branch2b/kernel has shape (3, 3, 128, 64), expected (3, 3, 128, 128)"),
    "wrong number of classes": (lambda layers: replaced(layers, "fc6", "bias", np.zeros(10, "f4")),
                                "fc6/bias has shape (10,), expected (6,)"),
    "another architecture": (keras_applications_naming,
                             "missing 107 of its 107 layers: 'conv1', 'bn_conv1', 'res2a_branch2a', "
                             "'bn2a_branch2a' and 103 more; has layers it does not have: 'conv1_bn'"),
    "deeper network": (deeper, "has layers it does not have: 'bn4g_branch2a', 'res4g_branch2a')"),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_bad_layers_are_named_and_nothing_is_written(tmp_path, keras_layers, case):
    make_layers, message = BAD_LAYERS[case]
    path = write_keras2(tmp_path / "res.h5", make_layers(keras_layers))
    with pytest.raises(ValueError) as error:
        import_keras(path, tmp_path / "out" / "model.safetensors")
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_not_hdf5(tmp_path):
    path = tmp_path / "res.h5"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a Keras model")
    with pytest.raises(ValueError, match="res.h5: not an HDF5 file"):
        import_keras(path, tmp_path / "out" / "model.safetensors")
    assert not (tmp_path / "out").exists()


def test_keras_archive_says_what_to_import(tmp_path):
    path = tmp_path / "res.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match=r"res.keras: a Keras 3 .keras archive, .* import its model.weights.h5"):
        import_keras(path, tmp_path / "out" / "model.safetensors")


def test_keras3_weights_file_without_layer_names(tmp_path):
    path = tmp_path / "res.weights.h5"
    with h5py.File(path, "w") as file:  # as Keras 3.0 to 3.5 wrote it
        file.create_group("layers/conv2d/vars")["0"] = np.zeros((7, 7, 3, 64), np.float32)
    with pytest.raises(ValueError, match=r"does not record layer names \(Keras before 3.6\)"):
        import_keras(path, tmp_path / "out" / "model.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.h5: no such file"):
        import_keras(tmp_path / "nothing.h5", tmp_path / "out" / "model.safetensors")


def test_hdf5_without_layers(tmp_path):
    path = tmp_path / "test_signs.h5"
    with h5py.File(path, "w") as file:
        file["test_set_x"] = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"holds no Keras layer weights \(found: 'test_set_x'\)"):
        import_keras(path, tmp_path / "out" / "model.safetensors")


@pytest.mark.slow  # Keras builds and runs whole models
def test_failed_import_keeps_the_previous_model(tmp_path, keras_layers):
    good = write_keras2(tmp_path / "good.h5", keras_layers)
    bad = write_keras2(tmp_path / "bad.h5", without(keras_layers, "fc6"))
    out = tmp_path / "out"
    assert main(["import-keras", str(good), "--out", str(out)]) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(["import-keras", str(bad), "--out", str(out)]) == 2
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


def test_cli_error_is_one_line(tmp_path, capsys):
    path = tmp_path / "res.h5"
    path.write_text("not a model")
    assert main(["import-keras", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("signs import-keras: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- parity with Keras 3 itself (torch backend) ------------------------------------------------------------


def build_original_keras_model(keras, input_shape=(64, 64, 3), classes=6):
    """The original code (Coursera "Residual Networks"), layer for layer, in Keras 3."""
    from keras import layers

    def identity_block(X, f, filters, stage, block):
        conv_name, bn_name = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
        F1, F2, F3 = filters
        X_shortcut = X
        X = layers.Conv2D(F1, (1, 1), strides=(1, 1), padding="valid", name=conv_name + "2a")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2a")(X)
        X = layers.Activation("relu")(X)
        X = layers.Conv2D(F2, (f, f), strides=(1, 1), padding="same", name=conv_name + "2b")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2b")(X)
        X = layers.Activation("relu")(X)
        X = layers.Conv2D(F3, (1, 1), strides=(1, 1), padding="valid", name=conv_name + "2c")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2c")(X)
        X = layers.Add()([X, X_shortcut])
        return layers.Activation("relu")(X)

    def convolutional_block(X, f, filters, stage, block, s=2):
        conv_name, bn_name = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
        F1, F2, F3 = filters
        X_shortcut = X
        X = layers.Conv2D(F1, (1, 1), strides=(s, s), padding="valid", name=conv_name + "2a")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2a")(X)
        X = layers.Activation("relu")(X)
        X = layers.Conv2D(F2, (f, f), strides=(1, 1), padding="same", name=conv_name + "2b")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2b")(X)
        X = layers.Activation("relu")(X)
        X = layers.Conv2D(F3, (1, 1), strides=(1, 1), padding="valid", name=conv_name + "2c")(X)
        X = layers.BatchNormalization(axis=3, name=bn_name + "2c")(X)
        X_shortcut = layers.Conv2D(F3, (1, 1), strides=(s, s), padding="valid", name=conv_name + "1")(X_shortcut)
        X_shortcut = layers.BatchNormalization(axis=3, name=bn_name + "1")(X_shortcut)
        X = layers.Add()([X, X_shortcut])
        return layers.Activation("relu")(X)

    X_input = layers.Input(input_shape)
    X = layers.ZeroPadding2D((3, 3))(X_input)
    X = layers.Conv2D(64, (7, 7), strides=(2, 2), name="conv1")(X)
    X = layers.BatchNormalization(axis=3, name="bn_conv1")(X)
    X = layers.Activation("relu")(X)
    X = layers.MaxPooling2D((3, 3), strides=(2, 2))(X)
    X = convolutional_block(X, 3, [64, 64, 256], stage=2, block="a", s=1)
    for block in "bc":
        X = identity_block(X, 3, [64, 64, 256], stage=2, block=block)
    X = convolutional_block(X, 3, [128, 128, 512], stage=3, block="a", s=2)
    for block in "bcd":
        X = identity_block(X, 3, [128, 128, 512], stage=3, block=block)
    X = convolutional_block(X, 3, [256, 256, 1024], stage=4, block="a", s=2)
    for block in "bcdef":
        X = identity_block(X, 3, [256, 256, 1024], stage=4, block=block)
    X = convolutional_block(X, 3, [512, 512, 2048], stage=5, block="a", s=2)
    for block in "bc":
        X = identity_block(X, 3, [512, 512, 2048], stage=5, block=block)
    X = layers.AveragePooling2D((2, 2), name="avg_pool")(X)
    X = layers.Flatten()(X)
    X = layers.Dense(classes, activation="softmax", name="fc" + str(classes))(X)
    model = keras.Model(inputs=X_input, outputs=X, name="ResNet50")
    randomize(keras, model, np.random.default_rng(0))
    return model


def randomize(keras, model, rng: np.random.Generator) -> None:
    """Random weights, conv biases and batch-norm statistics, scaled so that outputs depend on the input
    without saturating the softmax (small gamma on each block's last batch norm keeps the residual sum tame)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            gamma = rng.uniform(0.1, 0.3, c) if layer.name.endswith("2c") else rng.uniform(0.5, 1.5, c)
            layer.set_weights([gamma, rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:-1])
            layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel.shape), rng.normal(0, 0.1, bias.shape)])


@pytest.fixture(scope="module")
def keras(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERAS_BACKEND", "torch")  # no TensorFlow: Keras 3 runs on the torch we have
        env.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))  # leave ~/.keras alone
        return pytest.importorskip("keras", reason="Keras 3 is not installed (pip install -c constraints.txt keras)")


@pytest.fixture(scope="module")
def keras_model(keras):
    return build_original_keras_model(keras)


def keras_outputs(keras_model, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images (N x H x W x C, varied in colour) and the Keras model's probabilities for them."""
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (count, *keras_model.input_shape[1:])) * rng.uniform(0.2, 1, (count, 1, 1, 3))
    images = images.astype(np.float32)
    probabilities = np.asarray(keras_model.predict_on_batch(images))
    # The comparison means something only if the outputs are neither one-hot nor the same for every image.
    assert probabilities.max() < 0.99 and np.abs(probabilities - probabilities.mean(0)).max() > 100 * PARITY_ATOL
    return images, probabilities


@pytest.fixture(scope="module")
def keras_reference(keras_model):
    return keras_outputs(keras_model, 4)


def assert_same_outputs(imported_path, images: np.ndarray, expected: np.ndarray) -> None:
    ours = predict(load_model(imported_path), torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    difference = float(np.abs(ours - expected).max())
    assert difference < PARITY_ATOL, f"max |ours - keras| = {difference}"


@pytest.mark.slow  # Keras builds and runs whole models
def test_keras3_full_model_gives_keras_outputs(tmp_path, keras_model, keras_reference):
    keras_model.save(str(tmp_path / "res.h5"))  # legacy HDF5: model_weights/<layer>/<layer>/kernel
    import_keras(tmp_path / "res.h5", tmp_path / "model.safetensors")
    assert_same_outputs(tmp_path / "model.safetensors", *keras_reference)


@pytest.mark.slow  # Keras builds and runs whole models
def test_keras3_weights_file_gives_keras_outputs(tmp_path, keras_model, keras_reference):
    keras_model.save_weights(str(tmp_path / "res.weights.h5"))  # layers/<class name>/vars/<position>
    import_keras(tmp_path / "res.weights.h5", tmp_path / "model.safetensors")
    assert_same_outputs(tmp_path / "model.safetensors", *keras_reference)


@pytest.mark.slow
def test_keras3_larger_input_flattens_like_keras(tmp_path, keras):
    """At 128 x 96 the pooled features are 2 x 1 x 2048: the dense kernel's rows must be reordered."""
    keras_model = build_original_keras_model(keras, input_shape=(128, 96, 3))
    keras_model.save(str(tmp_path / "res.h5"))
    import_keras(tmp_path / "res.h5", tmp_path / "model.safetensors")
    assert load_model(tmp_path / "model.safetensors").input_shape == (128, 96, 3)
    assert_same_outputs(tmp_path / "model.safetensors", *keras_outputs(keras_model, 2))
