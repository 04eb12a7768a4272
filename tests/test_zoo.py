import pytest
import torch
from torch import nn

from edgeshrink.tasks.registry import list_tasks, load_task
from edgeshrink.tasks.zoo import create_model, list_models, model_entry


def independent_weight_count(model: nn.Module) -> int:
    """Weights of conv and linear layers computed from their shapes' definitions, not from numel."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            total += m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs(name):
    model = create_model(name).eval()
    x = torch.randn(2, *model_entry(name).input_shape)
    assert model(x).shape == (2, 10)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == independent_weight_count(model)


def test_deep_compression_architectures():
    assert independent_weight_count(create_model("lenet5")) == 430_500  # the paper's figure
    assert independent_weight_count(create_model("lenet300")) == 266_200


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_names_a_zoo_model(name):
    task = load_task(name)
    assert task.model in list_models()
    assert task.arch == {"task": name, "model": task.model}
