import math

import pytest
import torch
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.mac_count import count_macs
from edgeshrink.tasks.registry import list_tasks, load_task
from edgeshrink.tasks.zoo import create_model, list_models, model_entry

CASES = [(name, shape) for name in list_models() for shape in model_entry(name).shapes()]


CONV = (nn.Conv1d, nn.Conv2d)
RECURRENT_GATES = {nn.GRU: 3, nn.LSTM: 4, nn.RNN: 1}


def independent_weight_count(model: nn.Module) -> int:
    """Weights of conv, linear, attention and recurrent layers from their shapes' definitions, not numel."""
    total = 0
    for m in model.modules():
        if isinstance(m, CONV):
            total += m.out_channels * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
        elif isinstance(m, nn.MultiheadAttention):  # q, k, v projections (out_proj is a Linear)
            total += 3 * m.embed_dim * m.embed_dim
        elif type(m) in RECURRENT_GATES:
            gates = RECURRENT_GATES[type(m)] * m.hidden_size
            total += gates * (m.input_size + m.hidden_size) + (m.num_layers - 1) * gates * 2 * m.hidden_size
    return total


def independent_parameter_count(model: nn.Module) -> int:
    """Every parameter, from the layers' definitions: weights, biases, norm scales and shifts, and free
    parameters (a learned position table)."""
    total = independent_weight_count(model)
    for m in model.modules():
        if isinstance(m, (*CONV, nn.Linear)):
            total += 0 if m.bias is None else m.out_channels if isinstance(m, CONV) else m.out_features
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine:
            total += 2 * m.num_features
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            total += 2 * math.prod(m.normalized_shape)
        elif isinstance(m, nn.MultiheadAttention):
            total += 3 * m.embed_dim
        elif type(m) in RECURRENT_GATES:
            total += 2 * RECURRENT_GATES[type(m)] * m.hidden_size * m.num_layers
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


def _hook_macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, CONV):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention):  # projections, scores q.k, weighted sum of v, out_proj
        batch, length, dim = inputs[0].shape
        return batch * length * (3 * dim * dim + 2 * length * dim + dim * dim)
    batch, steps, _ = inputs[0].shape  # recurrent, batch_first
    return batch * steps * RECURRENT_GATES[type(module)] * module.hidden_size * (module.input_size + module.hidden_size)


def independent_mac_count(model: nn.Module, shape) -> int:
    """MACs from forward hooks on each conv, linear, attention and recurrent layer (the fast paths of
    attention are off, so every layer runs as a module)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _hook_macs(module, inputs, output)

    kinds = (*CONV, nn.Linear, nn.MultiheadAttention, *RECURRENT_GATES)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    with torch.enable_grad():  # grad mode keeps TransformerEncoderLayer off its fused fast path
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name, shape", CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES])
def test_every_model_builds_runs_and_counts(name, shape):
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=10).eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) == independent_parameter_count(model)
    assert count_macs(model, shape) == independent_mac_count(model, shape)


@pytest.mark.parametrize("name", [n for n in list_models() if model_entry(n).width])
def test_width_multiplier_scales_the_model(name):
    shape = model_entry(name).input_shape
    narrow = create_model(name, width=0.5)
    wide = create_model(name, width=2.0)
    assert count_macs(narrow, shape) < count_macs(create_model(name), shape) < count_macs(wide, shape)
    assert independent_weight_count(narrow) < independent_weight_count(wide)


def test_published_architectures():
    assert independent_weight_count(create_model("lenet5")) == 430_500  # Deep Compression, Table 2
    assert independent_weight_count(create_model("lenet300")) == 266_200
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters (1x1 projections add 0.003M here)
    assert 0.265e6 < sum(p.numel() for p in create_model("resnet20", input_shape=(3, 32, 32)).parameters()) < 0.28e6
    assert sum(p.numel() for p in create_model("resnet8", width=4).parameters()) >= 1_000_000


def test_unknown_option_names_the_options():
    with pytest.raises(ConfigError, match="takes no option 'widht'.*width"):
        create_model("resnet8", widht=2)


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_names_a_zoo_model(name):
    task = load_task(name)
    assert task.model in list_models()
    assert task.arch["task"] == name and task.arch["model"] == task.model
    rebuilt = create_model(task.arch["model"], **task.arch.get("model_kwargs", {}))
    built = task.build_model()
    assert [tuple(t.shape) for t in rebuilt.state_dict().values()] == [
        tuple(t.shape) for t in built.state_dict().values()
    ]


def test_zoo_command_lists_models_with_their_counts():
    from typer.testing import CliRunner

    from edgeshrink.cli import app

    listed = CliRunner().invoke(app, ["zoo", "--help"])
    assert listed.exit_code == 0 and "default: all" in listed.output
    chosen = ["resnet8", "ds-cnn"]  # counts of every model are checked above; here the command's output
    run = CliRunner().invoke(app, ["zoo", *chosen])
    assert run.exit_code == 0, run.output
    rows = {(line.split()[0], line.split()[1]): line.split() for line in run.output.splitlines()[1:-1]}
    assert {n for n, _ in rows} == set(chosen)
    for name, shape in [(n, s) for n, s in CASES if n in chosen]:
        row = rows[(name, "x".join(map(str, shape)))]
        model = create_model(name, input_shape=shape)
        assert int(row[2].replace(",", "")) == sum(p.numel() for p in model.parameters())
        assert int(row[3].replace(",", "")) == independent_mac_count(model, shape)


def test_train_subset_is_fixed_and_sized():
    from edgeshrink.tasks.data import Dataset, Split

    task = load_task("fashion-resnet8x4")
    n = task.train_subset + 500
    data = Dataset(
        "fake", Split(torch.arange(n).float().view(n, 1), torch.arange(n)), Split(torch.zeros(1, 1), torch.zeros(1)), 10
    )
    first = torch.cat([y for _, y in task.train_loader(data, seed=1)])
    second = torch.cat([y for _, y in task.train_loader(data, seed=2)])
    assert len(first) == task.train_subset
    assert torch.equal(first.sort().values, second.sort().values)  # same examples, other order
    assert not torch.equal(first, second)
