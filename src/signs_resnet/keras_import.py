"""Bring your Keras model: convert weights saved by the original Keras code into our model artifact.

The original named every layer after its place in the architecture table (`conv1`, `bn_conv1`,
`res2a_branch2a`, `bn2a_branch2a`, ..., `res2a_branch1`, ..., `fc6`), so each of our tensors is
looked up by that name. Reading needs h5py only, not Keras. Accepted files:

    Keras 2 model.save / save_weights     [model_weights/]<layer>/<layer>/kernel:0
    Keras 3 legacy model.save('x.h5')     model_weights/<layer>/<layer>/kernel
    Keras 3 save_weights('x.weights.h5')  layers/<class name>/vars/0, 1, ... (layer name in an attribute)
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from signs_resnet.data import preprocess
from signs_resnet.model import STAGES, ResNet50, ResNet50Model
from signs_resnet.model_file import save_model

# Each Keras layer's weights, in the order Keras keeps them (a Keras 3 weights file numbers them so).
CONV_WEIGHTS = ("kernel", "bias")
BATCH_NORM_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
DENSE_WEIGHTS = ("kernel", "bias")
DEFAULT_INPUT_SIZE = 64  # the SIGNS images; used when the file does not record its input shape


def layer_table() -> list[tuple[str, str, str, str]]:
    """(Keras conv layer, Keras batch-norm layer, our conv module, our batch-norm module), stage by stage."""
    rows = [("conv1", "bn_conv1", "stage1.1", "stage1.2")]
    for stage, (_, identity_blocks, _) in enumerate(STAGES, start=2):
        for index, block in enumerate(string.ascii_lowercase[: 1 + identity_blocks]):
            branches = ["branch2a", "branch2b", "branch2c"] + (["branch1"] if index == 0 else [])
            for branch in branches:
                ours = f"stage{stage}.{index}.{branch}"
                rows.append((f"res{stage}{block}_{branch}", f"bn{stage}{block}_{branch}", f"{ours}.0", f"{ours}.1"))
    return rows


@dataclass
class KerasWeights:
    path: str
    layers: dict[str, dict[str, np.ndarray]]  # layer name -> weight name ("kernel", or "0" by position) -> array
    layout: str
    keras_version: str | None
    input_shape: tuple[int, int, int] | None  # from the full model's config, when there is one


def read_keras_weights(path: str | Path) -> KerasWeights:
    """Every layer's weights in a Keras HDF5 file, by layer name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        raise ValueError(f"{path}: a Keras 3 .keras archive, not an HDF5 file; unzip it and import its "
                         "model.weights.h5")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file (expected a Keras model saved with model.save('model.h5') "
                         "or model.save_weights)")
    try:
        with h5py.File(path, "r") as file:
            if "model_weights" in file:
                layers, layout = _read_layer_groups(file["model_weights"]), "full model"
            elif "layers" in file and "layer_names" not in file.attrs:
                layers, layout = _read_numbered_weights(file["layers"], path), "Keras 3 weights file"
            else:
                layers, layout = _read_layer_groups(file), "weights file"
            keras_version = _text(file.attrs.get("keras_version"))
            input_shape = _input_shape(file.attrs.get("model_config"))
            top_level = list(file)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the HDF5 file ({error})") from None
    if not layers:
        raise ValueError(f"{path}: holds no Keras layer weights (found: {_names(top_level)})")
    return KerasWeights(str(path), layers, layout, keras_version, input_shape)


def _read_layer_groups(root: h5py.Group) -> dict[str, dict[str, np.ndarray]]:
    """<layer>/<layer>/kernel:0 (Keras 2) or <layer>/<layer>/kernel (Keras 3): keyed by 'kernel'."""
    layers = {}
    for layer_name, group in root.items():
        weights = _datasets(group) if isinstance(group, h5py.Group) else {}
        if weights:
            layers[layer_name] = weights
    return layers


def _datasets(group: h5py.Group) -> dict[str, np.ndarray]:
    """All datasets under group, by the last part of their name: 'conv1_1/kernel:0' -> 'kernel'."""
    weights = {}

    def add(name: str, item: h5py.HLObject) -> None:
        if isinstance(item, h5py.Dataset):
            weights[name.rsplit("/", 1)[-1].split(":")[0]] = item[()]

    group.visititems(add)
    return weights


def _read_numbered_weights(root: h5py.Group, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Keras 3 .weights.h5: layers/<class name>/vars/<position>, the layer's own name in vars' attributes."""
    layers = {}
    for group in root.values():
        variables = group.get("vars") if isinstance(group, h5py.Group) else None
        if variables is None or len(variables) == 0:  # layers without weights (activations, pooling)
            continue
        name = _text(variables.attrs.get("name"))
        if not name:
            raise ValueError(f"{path}: this Keras weights file does not record layer names (Keras before 3.6); "
                             "save the model with model.save('model.h5') and import that")
        layers[name] = {index: variables[index][()] for index in variables}
    return layers


def _text(value: object) -> str | None:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _input_shape(model_config: object) -> tuple[int, int, int] | None:
    """The input layer's shape in a full model's JSON config (Keras 2 batch_input_shape, Keras 3 batch_shape)."""
    try:
        for layer in json.loads(_text(model_config))["config"]["layers"]:
            if layer["class_name"] == "InputLayer":
                shape = layer["config"].get("batch_input_shape") or layer["config"].get("batch_shape")
                if len(shape) == 4 and all(isinstance(n, int) for n in shape[1:]):
                    return tuple(shape[1:])
    except (TypeError, ValueError, KeyError):
        pass
    return None


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _dense_layer_name(keras: KerasWeights) -> str:
    """The original names its dense layer 'fc' + str(classes)."""
    names = [name for name in keras.layers if re.fullmatch(r"fc[1-9][0-9]*", name)]
    if len(names) > 1:
        raise ValueError(f"{keras.path}: has {len(names)} dense layers ({_names(names)}), the original has one")
    return names[0] if names else "fc<classes>"


def _check_layers(keras: KerasWeights, dense_name: str) -> None:
    expected = [name for row in layer_table() for name in row[:2]] + [dense_name]
    missing = [name for name in expected if name not in keras.layers]
    unexpected = sorted(set(keras.layers) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} of its {len(expected)} layers: {_names(missing)}")
    if unexpected:
        problems.append(f"has layers it does not have: {_names(unexpected)}")
    if problems:
        raise ValueError(f"{keras.path}: not the original SIGNS ResNet50 ({'; '.join(problems)})")


def _weights(keras: KerasWeights, layer: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    weights = keras.layers[layer]
    if all(key.isdigit() for key in weights):  # a Keras 3 weights file numbers them in Keras' order
        weights = {names[int(key)] if int(key) < len(names) else key: value for key, value in weights.items()}
    return weights


def _tensor(keras: KerasWeights, weights: dict[str, np.ndarray], layer: str, name: str,
            shape: tuple[int, ...]) -> torch.Tensor:
    if name not in weights:
        raise ValueError(f"{keras.path}: layer {layer!r} has no {name!r} (found: {', '.join(sorted(weights))})")
    value = weights[name]
    if value.shape != shape:
        raise ValueError(f"{keras.path}: {layer}/{name} has shape {value.shape}, expected {shape}")
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def convert(keras: KerasWeights) -> ResNet50Model:
    """Our ResNet50 with the Keras weights, in inference mode; raises ValueError naming what does not fit."""
    dense_name = _dense_layer_name(keras)
    _check_layers(keras, dense_name)
    first_kernel = _weights(keras, "conv1", CONV_WEIGHTS).get("kernel")
    channels = first_kernel.shape[2] if first_kernel is not None and first_kernel.ndim == 4 else 3
    input_shape = keras.input_shape or (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, channels)
    model = ResNet50(input_shape, int(dense_name[2:]))
    state = model.state_dict()

    for conv_name, norm_name, conv, norm in layer_table():
        out_channels, in_channels, kernel_height, kernel_width = state[f"{conv}.weight"].shape
        conv_weights = _weights(keras, conv_name, CONV_WEIGHTS)
        kernel = _tensor(keras, conv_weights, conv_name, "kernel",
                         (kernel_height, kernel_width, in_channels, out_channels))
        bias = (_tensor(keras, conv_weights, conv_name, "bias", (out_channels,)) if "bias" in conv_weights
                else torch.zeros(out_channels))
        norm_weights = _weights(keras, norm_name, BATCH_NORM_WEIGHTS)
        gamma, beta, mean, variance = (_tensor(keras, norm_weights, norm_name, name, (out_channels,))
                                       for name in BATCH_NORM_WEIGHTS)
        state[f"{conv}.weight"] = kernel.permute(3, 2, 0, 1)  # HWIO -> OIHW
        state[f"{norm}.weight"], state[f"{norm}.bias"], state[f"{norm}.running_var"] = gamma, beta, variance
        # Our convolutions have no bias: BN(conv(x) + b) == BN(conv(x)) with the running mean lowered by b.
        state[f"{norm}.running_mean"] = mean - bias

    # Keras flattens the pooled features as H x W x C, we flatten them as C x H x W.
    classes, features = state["fc.weight"].shape
    pooled_height, pooled_width = ResNet50Model.pooled_size(*input_shape[:2])
    dense_weights = _weights(keras, dense_name, DENSE_WEIGHTS)
    kernel = _tensor(keras, dense_weights, dense_name, "kernel", (features, classes))
    state["fc.weight"] = (kernel.reshape(pooled_height, pooled_width, -1, classes)
                          .permute(3, 2, 0, 1).reshape(classes, features))
    state["fc.bias"] = _tensor(keras, dense_weights, dense_name, "bias", (classes,))
    model.load_state_dict(state)
    return model.eval()


def import_keras(path: str | Path, out: str | Path) -> str:
    """Convert a Keras model file into our model artifact at `out`; return its checksum. Writes nothing on error."""
    keras = read_keras_weights(path)
    model = convert(keras)
    metadata = {
        "classes": [str(i) for i in range(model.num_classes)],
        "input_shape": list(model.input_shape),
        "preprocessing": preprocess.PREPROCESSING,
        "source": {
            "keras_file": Path(path).name,
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "layout": keras.layout,
            "keras_version": keras.keras_version,
        },
    }
    return save_model(out, model, metadata)
