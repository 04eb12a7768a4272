"""Counting what a model holds: parameters, nonzeros, dense bytes."""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.weights import effective_state_dict


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters and nonzero parameters as the model computes with them (masks and codebooks applied).

    Counts the tensors a plain copy of the model would have as parameters, so parametrization internals
    (originals, centroids) are not double-counted.
    """
    state = effective_state_dict(model)
    plain_names = _plain_parameter_names(model)
    params = sum(state[k].numel() for k in plain_names)
    nonzeros = sum(int(torch.count_nonzero(state[k])) for k in plain_names)
    return {"parameters": params, "nonzeros": nonzeros}


def _plain_parameter_names(model: nn.Module) -> list[str]:
    names = []
    for key, _ in model.named_parameters():
        if ".parametrizations." in f".{key}":
            head, _, rest = key.partition("parametrizations.")
            tensor_name = rest.split(".")[0]
            plain = f"{head}{tensor_name}"
            if plain not in names:
                names.append(plain)
        else:
            names.append(key)
    return names


def dense_bytes(model: nn.Module, bits: int = 32) -> int:
    """Bytes of the model's parameters stored densely at `bits` bits each (the compression baseline)."""
    return parameter_counts(model)["parameters"] * bits // 8
