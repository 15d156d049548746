"""OpenVINO's conversion of a model, kept in the user cache folder so that only a model's first start converts it:
converting the PyTorch model (a TorchScript trace) takes seconds, reading the saved network a fraction of one
(docs/performance.md, "Start-up").

An entry is a folder in $SIGNS_HOME/openvino (else the platform's user cache folder's openvino/) holding the network
in OpenVINO's own format (model.xml, model.bin) and manifest.json: what it was converted from (`key`) and the
SHA-256 of both files. It is written into a temporary folder beside its place, then renamed into it, and checked
whole before it is read: a missing, partial, damaged or foreign entry is converted again and replaced, and a cache
folder that cannot be written is logged, never an error. Nothing in it is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signs_resnet import user_cache
from signs_resnet.artifact import umasked
from signs_resnet.model_file import LoadedModel

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

# Bump it whenever what is converted changes (export.probabilities_module, openvino_form, the example input), so
# that no entry of an earlier conversion is read.
CONVERSION = 1
CACHE_PART = "openvino"
XML, BIN, MANIFEST = "model.xml", "model.bin", "manifest.json"


def key(model: LoadedModel) -> dict[str, Any]:
    """What an entry is converted from: the model's checksum, its metadata (the checksum covers the tensors alone,
    and the conversion reads the temperature and input shape from the metadata), OpenVINO's version and ours."""
    import openvino

    metadata = hashlib.sha256(json.dumps(model.metadata, sort_keys=True).encode()).hexdigest()
    return {"checksum": model.checksum, "metadata_sha256": metadata, "openvino": openvino.get_version(),
            "conversion": CONVERSION}


def entry_folder(model: LoadedModel) -> Path:
    """Where `model`'s entry is: its checksum's start, for a reader, then its key's digest."""
    digest = hashlib.sha256(json.dumps(key(model), sort_keys=True).encode()).hexdigest()
    return user_cache.folder(CACHE_PART) / f"{model.checksum[:16]}-{digest[:16]}"


def read(model: LoadedModel) -> openvino.Model | None:
    """`model`'s network as converted before, from its verified entry; None when there is none, or when the entry is
    not sound (logged once)."""
    entry = entry_folder(model)
    try:
        if not entry.is_dir():
            log.info("no OpenVINO conversion of this model in the cache folder %s yet", entry.parent)
            return None
        return _network(_verified_files(entry, key(model)))
    except (OSError, ValueError, RuntimeError) as error:  # OpenVINO raises RuntimeError on a graph it cannot read
        log.warning("ignoring the cached OpenVINO conversion in %s (%s): converting the model again", entry, error)
        return None


def write(model: LoadedModel, network: openvino.Model) -> Path | None:
    """Save `network`, converted from `model`, as its entry; return the entry's folder, or None when the cache
    folder cannot be written (logged once): the model is then simply converted again at its next start."""
    import openvino

    entry, expected = entry_folder(model), key(model)
    staging = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
        openvino.save_model(network, staging / XML, compress_to_fp16=False)  # the weights as converted, fp32
        hashes = {name: hashlib.sha256((staging / name).read_bytes()).hexdigest() for name in (XML, BIN)}
        # Last, so that a folder with a manifest has its files; no fsync: a file lost in a crash fails its hash.
        (staging / MANIFEST).write_text(json.dumps({"key": expected, "sha256": hashes}, indent=1) + "\n")
        os.chmod(staging, umasked(0o777))  # mkdtemp makes it private; an entry is an ordinary folder
        _publish(staging, entry, expected)
    except (OSError, RuntimeError) as error:  # RuntimeError: OpenVINO could not write its files
        log.warning("cannot cache the OpenVINO conversion in %s (%s): the next start converts again",
                    entry.parent, error)
        return None
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return entry


def _verified_files(entry: Path, expected: dict[str, Any]) -> dict[str, bytes]:
    """The entry's two files, read once and checked against its manifest; ValueError or OSError saying what is
    wrong."""
    manifest = json.loads((entry / MANIFEST).read_text())
    if not isinstance(manifest, dict) or manifest.get("key") != expected:
        raise ValueError(f"its {MANIFEST} is not this model's conversion by this OpenVINO")
    hashes = manifest.get("sha256")
    contents = {name: (entry / name).read_bytes() for name in (XML, BIN)}
    for name, content in contents.items():
        if not isinstance(hashes, dict) or hashlib.sha256(content).hexdigest() != hashes.get(name):
            raise ValueError(f"{name} is not the file its {MANIFEST} names (SHA-256)")
    return contents


def _network(files: dict[str, bytes]) -> openvino.Model:
    """The network from the bytes that were verified, never from the files again (which could have changed since)."""
    import numpy as np
    import openvino

    return openvino.Core().read_model(files[XML], openvino.Tensor(np.frombuffer(files[BIN], np.uint8)))


def _publish(staging: Path, entry: Path, expected: dict[str, Any]) -> None:
    """Rename the finished folder `staging` into `entry`. A sound entry already there (a concurrent writer's) is
    kept; an unsound one (which `read` refused) is moved aside and replaced. OSError when neither can be done."""
    try:
        os.rename(staging, entry)
        return
    except OSError:
        if not entry.is_dir():
            raise  # not because an entry is there (renaming never replaces a full folder): it cannot be written
    try:
        _verified_files(entry, expected)
        return
    except (OSError, ValueError):
        pass
    aside = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.old")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:
        pass  # another writer moved it aside first
    try:
        os.rename(staging, entry)
    except OSError:
        if not entry.is_dir():
            raise
        # else another writer renamed its own into place first: as good as ours
    finally:
        shutil.rmtree(aside, ignore_errors=True)
