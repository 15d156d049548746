"""Optional dependencies, installed as extras so that a serving install stays lean (`pip install
'signs-resnet[export]'`; `make` installs them all): import one, or a clear error naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"onnxscript": "export", "onnxruntime": "export", "matplotlib": "plots", "tritonclient": "grpc",
          "grpc": "grpc", "nncf": "quantize"}


class MissingExtra(ValueError):
    """A feature whose optional dependency is not installed: what to install, not a traceback."""


def require(module: str, feature: str) -> ModuleType:
    """`module` imported, or a MissingExtra saying that `feature` needs it and which extra installs it."""
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if package not in EXTRAS or (error.name or "").split(".")[0] not in (package, *EXTRAS):
            raise  # not an extra's absence: a broken install, said as it is
        extra = EXTRAS[package]
        raise MissingExtra(f"{feature} needs {package}, which the [{extra}] extra installs: "
                           f"pip install 'signs-resnet[{extra}]'") from None
