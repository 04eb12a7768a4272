"""Models to files and back: `save` (an .eshrink container, or a checkpoint), `load` (the only loader:
run folder, container or checkpoint -> Artifact), `unpack` (just the model)."""

from edgeshrink.io.reader import CONTAINER_NAME, REPORT_NAME, load, read_stored, to_artifact, unpack
from edgeshrink.io.settings import EncodeConfig
from edgeshrink.io.writer import header_meta, save, save_checkpoint, to_bytes

__all__ = [
    "CONTAINER_NAME",
    "REPORT_NAME",
    "EncodeConfig",
    "header_meta",
    "load",
    "read_stored",
    "save",
    "save_checkpoint",
    "to_artifact",
    "to_bytes",
    "unpack",
]
