"""The user cache folder: files the project keeps between runs and can always make again (the hand models, as
fetched, in int8 and as compiled; OpenVINO's conversions of models), in $SIGNS_HOME when it is set, else the
platform's user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def folder(part: str) -> Path:
    """The cache folder `part`: $SIGNS_HOME/part, else the platform's user cache folder's
    (~/.cache/signs-resnet/part on Linux). Nothing is created."""
    if os.environ.get("SIGNS_HOME"):
        return Path(os.environ["SIGNS_HOME"]) / part
    import platformdirs

    return Path(platformdirs.user_cache_dir("signs-resnet", appauthor=False)) / part
