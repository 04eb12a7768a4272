"""One error family for everything a user can get wrong.

Every message names the problem and the fix; the CLI prints it on one line instead of a traceback.
"""

from __future__ import annotations


class EdgeshrinkError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, unsupported model)."""


class ConfigError(EdgeshrinkError):
    """A recipe, stage config or command-line option is invalid."""


class ScopeError(ConfigError):
    """A layer selection matches nothing, or names a layer that does not exist."""


class DataError(EdgeshrinkError):
    """Data is missing, unreadable or of the wrong shape."""


class FormatError(EdgeshrinkError):
    """A file (container, checkpoint, ONNX) is damaged, truncated or not what it claims to be."""


class ArchitectureMismatchError(EdgeshrinkError):
    """Stored tensors do not fit the model they are loaded into."""


class UnsupportedLayerError(EdgeshrinkError):
    """A technique cannot be applied to a layer type."""


class ExportError(EdgeshrinkError):
    """An export failed, or the exported file does not compute what the model computes."""


class RuntimeLoadError(EdgeshrinkError):
    """A runtime (ONNX Runtime, LiteRT) refuses to load a model file."""


class BudgetError(EdgeshrinkError):
    """A stage lost more accuracy than its budget allows, and the run was strict."""


class TrainingDivergedError(EdgeshrinkError):
    """Training produced a non-finite loss (learning rate too high, bad data)."""
