"""Reference architectures (the zoo): LeNets, CIFAR-style ResNets, MobileNetV1/V2, SqueezeNet 1.1, DS-CNN.

Every model is registered by name (`models.registry`), built by `create_model`, and tested
automatically for every input shape it is registered for.
"""

from edgeshrink.models.registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = ["ModelEntry", "create_model", "list_models", "model_entry", "register_model"]
