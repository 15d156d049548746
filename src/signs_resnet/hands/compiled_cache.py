"""The hand models as OpenVINO compiled them, kept in the user cache folder so that a process starts without
compiling them again: compiling the finder's four (two models, two ways) took 1.3–1.9 s on two AVX2 cores, importing
them 0.4–0.5 s (docs/performance.md, "Start-up").

An entry is one file, hand-models/compiled/<digest>.blob: a line of JSON (what it was compiled from: the model's
SHA-256, the settings, OpenVINO's version, the CPU; and the SHA-256 of the rest), then the compiled model as
OpenVINO exports it. It is written whole or not at all (artifact.atomic_write) and checked whole before it is
imported: a missing, damaged or foreign entry is compiled again and replaced, and a folder that cannot be written is
logged, never an error. Nothing in it is ever unpickled. OpenVINO's own cache (CACHE_DIR) would do the keeping, but
it neither checks a file when it reads it nor writes it atomically.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import platform
from pathlib import Path
from typing import Any

from signs_resnet import user_cache
from signs_resnet.artifact import atomic_write
from signs_resnet.hands.model_files import CACHE_PART

log = logging.getLogger(__name__)

FORMAT = 1  # bump whenever what an entry holds changes, so that no older entry is read
PART = "compiled"


def compile_model(core, model, source_sha256: str, options: dict[str, Any]):
    """`model` (read from the bytes whose SHA-256 is `source_sha256`) compiled for the CPU with `options`: imported
    from its cache entry when a sound one is there, else compiled and its entry written."""
    import openvino

    key = {"format": FORMAT, "model_sha256": source_sha256, "options": {k: str(v) for k, v in options.items()},
           "openvino": openvino.get_version(), "cpu": _cpu()}
    path = user_cache.folder(CACHE_PART) / PART / f"{_digest(json.dumps(key, sort_keys=True).encode())[:32]}.blob"
    blob = _read(path, key)
    if blob is not None:
        try:
            return core.import_model(io.BytesIO(blob), "CPU", options)
        except RuntimeError as error:  # OpenVINO refused a blob that checked out: compiled again below
            reason = " ".join(str(error).split())  # OpenVINO's lines, where it failed and why, as one
            log.warning("ignoring the compiled hand model %s (%s): compiling it again", path, reason)
    compiled = core.compile_model(model, "CPU", options)
    _write(path, key, compiled)
    return compiled


@functools.cache
def _cpu() -> str:
    """The CPU an entry was compiled on: its model and instruction sets (Linux's /proc/cpuinfo, x86's and Arm's
    lines), which decide how OpenVINO's CPU plugin transforms the graph it exports; elsewhere what `platform`
    tells. (OpenVINO also stamps the instruction set into the blob and refuses another's.)"""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        described = sorted({line for line in lines
                            if line.startswith(("model name", "flags", "Features", "CPU implementer", "CPU part"))})
    except OSError:
        described = []
    return _digest("\n".join([platform.machine(), platform.processor(), *described]).encode())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, key: dict[str, Any]) -> bytes | None:
    """The blob of the entry at `path` when it is this key's and whole; None when there is none, or when it is not
    sound (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("cannot read the compiled hand model %s (%s): compiling it again", path, error)
        return None
    header, _, blob = data.partition(b"\n")
    try:
        manifest = json.loads(header)
        sound = isinstance(manifest, dict) and manifest.get("key") == key and manifest.get("sha256") == _digest(blob)
    except ValueError:
        sound = False
    if not sound:
        log.warning("ignoring the compiled hand model %s (not this model's, or damaged): compiling it again", path)
        return None
    return blob


def _write(path: Path, key: dict[str, Any], compiled) -> None:
    """Write `compiled`'s entry at `path` whole or not at all; a failure is logged."""
    exported = io.BytesIO()
    try:
        compiled.export_model(exported)
        blob = exported.getvalue()
        header = json.dumps({"key": key, "sha256": _digest(blob)}, sort_keys=True).encode()
        atomic_write(path, header + b"\n" + blob)
    except (OSError, RuntimeError) as error:  # RuntimeError: OpenVINO could not export it
        log.warning("cannot keep the compiled hand model in %s (%s): the next start compiles it again",
                    path.parent, error)
