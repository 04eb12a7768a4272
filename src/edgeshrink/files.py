"""Writing files safely: a temporary name, then a rename, so a crash never leaves a half-written file."""

from __future__ import annotations

import os
from pathlib import Path

from edgeshrink.errors import ConfigError


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename it into place.

    Refuses to replace anything but a regular file: renaming over /dev/null or a folder would destroy it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a regular file: write to a file path instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
