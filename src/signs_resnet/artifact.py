"""Files the project writes: safetensors with JSON metadata and a checksum, written atomically.

Models and checkpoints share this one format. Nested state (an optimizer's state dict, say) is
split into its tensors, stored as safetensors, and the rest as JSON in the header, so nothing is
ever unpickled. The SHA-256 of the tensor bytes is kept in the metadata and checked on every read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FORMAT = "signs-resnet/1"
_TENSOR = "__tensor__"


def umasked(mode: int) -> int:
    """`mode` as the process's umask leaves it: what an ordinary file or folder it creates gets (mkstemp and
    mkdtemp make theirs private instead)."""
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return mode & ~umask


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write data to path so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umasked(0o666))  # mkstemp makes it private; a model is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _split(tree: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace every tensor in a nested dict/list by a reference into `tensors`."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(tree, dict):
        return {str(k): _split(v, tensors, f"{prefix}.{k}" if prefix else str(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, tensors, f"{prefix}.{i}") for i, v in enumerate(tree)]
    return tree


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR}:
            return tensors[tree[_TENSOR]]
        return {k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return sha.hexdigest()


def encode(kind: str, state: dict[str, Any], metadata: dict[str, Any]) -> tuple[bytes, str]:
    """The file contents for `state` (nested dicts of tensors and JSON values) and `metadata`, and their checksum."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, tensors, "")
    checksum = _digest(tensors)
    header = {"format": FORMAT, "kind": kind, "sha256": checksum, "state": skeleton, "metadata": metadata}
    return save_safetensors(tensors, metadata={"signs_resnet": json.dumps(header)}), checksum


def save(path: str | Path, kind: str, state: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Atomically write `state` and `metadata` (see encode); return the checksum."""
    contents, checksum = encode(kind, state, metadata)
    atomic_write(path, contents)
    return checksum


def load(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Read and verify a file written by `save`; return (state, metadata, checksum).

    Raises FileNotFoundError or ValueError with a message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        tensors = load_safetensors(data)
        header_json = _safetensors_metadata(data).get("signs_resnet")
        header = json.loads(header_json) if header_json else None
    except (SafetensorError, ValueError, UnicodeDecodeError, RuntimeError) as error:
        raise ValueError(f"{path}: not a {kind} file (truncated or corrupt: {error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {kind} file written by signs-resnet")
    if header.get("kind") != kind:
        raise ValueError(f"{path}: is a {header.get('kind')} file, expected a {kind} file")
    checksum = _digest(tensors)
    if checksum != header.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the file is corrupt")
    return _join(header["state"], tensors), header["metadata"], checksum


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_size = int.from_bytes(data[:8], "little")
    if header_size <= 0 or header_size > len(data) - 8:
        raise ValueError("bad safetensors header size")
    return json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
