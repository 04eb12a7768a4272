"""`edgeshrink.advise`: on the device or in the cloud, and why."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeshrink.api.profile import DevicesDir, deployed_costs, profile
from edgeshrink.devices.advise import CLOUD_DEVICE, Advice, advise_costs


def advise(
    model_or_artifact_or_path: Any,
    *,
    device: str,
    network: str,
    latency_budget_ms: float | None = None,
    private: bool = False,
    example_input: torch.Tensor | None = None,
    model: nn.Module | None = None,
    model_name: str | None = None,
    devices_dir: DevicesDir = None,
) -> Advice:
    """Profile the model (no latency measurement) and advise where to run it on `device` with `network`."""
    from edgeshrink.devices.catalogue import get_device, get_network
    from edgeshrink.recipes import list_recipes

    dev, net = get_device(device, devices_dir), get_network(network, devices_dir)
    cloud = get_device(CLOUD_DEVICE, devices_dir)
    costs = profile(model_or_artifact_or_path, example_input, model=model, model_name=model_name, latency=False).costs
    costs = deployed_costs(costs, dev.kind, [])
    return advise_costs(costs, dev, net, cloud, latency_budget_ms, private, list(list_recipes()))
