"""Reference architectures, registered by name so that every one is tested and listed automatically.

The architectures live in `edgeshrink.models` (one module per family); this module keeps the names
the tasks and older code import.
"""

from edgeshrink.models.registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = ["ModelEntry", "create_model", "list_models", "model_entry", "register_model"]
