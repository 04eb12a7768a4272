"""One operator at a time: small digit classifiers (input (N, 1, 8, 8)) that put a single layer, functional
call or forward idiom users write between a convolution stem and a linear head. The operator-level
companion of benchmarks/unseen_models.py, for `unseen_architectures.py --set ops`: where an architecture
fails, this says which operator did it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class OpNet(nn.Module):
    """conv 3x3 (1 -> 16) + BatchNorm + ReLU, then `op` on the (N, 16, 8, 8) map, then flatten + Linear."""

    def __init__(s, op: Callable[[nn.Module, torch.Tensor], torch.Tensor], layers: dict[str, nn.Module]):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        s.layers = nn.ModuleDict(layers)
        s.op = op
        with torch.no_grad():
            features = s.features(torch.zeros(2, 1, 8, 8)).shape[1]
        s.fc = nn.Linear(features, 10)

    def features(s, x: torch.Tensor) -> torch.Tensor:
        return s.op(s.layers, s.stem(x)).flatten(1)

    def forward(s, x: torch.Tensor) -> torch.Tensor:
        return s.fc(s.features(x))


def _conv(c_in: int = 16, c_out: int = 16, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kw.pop("k", 3), padding=kw.pop("padding", 1), **kw)


def _channel_shuffle(m, x):  # ShuffleNet: the widths written as numbers
    n, c, h, w = x.shape
    return m["c"](x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w))


def _spatial_attention(m, x):  # CBAM: max and mean over channels, a 7x7 conv, a sigmoid gate
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    return x * torch.sigmoid(m["c"](pooled))


def _sdpa(m, x):  # the 64 positions as tokens, F.scaled_dot_product_attention
    t = x.flatten(2).transpose(1, 2)
    q, k, v = m["qkv"](t).chunk(3, -1)
    return (t + m["o"](F.scaled_dot_product_attention(q, k, v))).mean(1)


def _manual_layernorm(m, x):  # over channels, written by hand with var and rsqrt
    mu, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=False)
    return m["c"]((x - mu) * torch.rsqrt(var + 1e-5))


def _gru_cell_loop(m, x):  # a Python loop over the 8 rows with GRUCell
    seq, h = x.mean(3).transpose(1, 2), None
    for step in range(seq.shape[1]):
        h = m["cell"](seq[:, step], h)
    return h


OPS: dict[str, tuple[Callable, Callable[[], dict[str, nn.Module]]]] = {
    "adaptive_max_pool_1": (lambda m, x: F.adaptive_max_pool2d(x, 1), dict),
    "adaptive_max_pool_2": (lambda m, x: F.adaptive_max_pool2d(m["c"](x), 2), lambda: {"c": _conv()}),
    "max_pool_padded": (lambda m, x: F.max_pool2d(m["c"](x), 3, 2, padding=1), lambda: {"c": _conv()}),
    "avg_pool_ceil": (lambda m, x: F.avg_pool2d(x, 3, 2, ceil_mode=True, count_include_pad=False), dict),
    "upsample_nearest": (lambda m, x: m["c"](F.interpolate(x, scale_factor=2.0)), lambda: {"c": _conv(stride=2)}),
    "upsample_bilinear": (
        lambda m, x: m["c"](F.interpolate(x, scale_factor=2.0, mode="bilinear")),
        lambda: {"c": _conv(stride=2)},
    ),
    "pixel_shuffle": (lambda m, x: m["c"](F.pixel_shuffle(x, 2)), lambda: {"c": _conv(4, 8, stride=2)}),
    "pixel_unshuffle": (lambda m, x: m["c"](F.pixel_unshuffle(x, 2)), lambda: {"c": _conv(64, 16)}),
    "instance_norm": (
        lambda m, x: F.relu(m["n"](m["c"](x))),
        lambda: {"c": _conv(), "n": nn.InstanceNorm2d(16, affine=True)},
    ),
    "dense_concat": (lambda m, x: torch.cat([x, F.relu(m["c"](x))], 1), lambda: {"c": _conv(16, 8)}),
    "channel_shuffle": (_channel_shuffle, lambda: {"c": _conv(groups=4)}),
    "spatial_attention": (_spatial_attention, lambda: {"c": _conv(2, 1, k=7, padding=3)}),
    "sdpa": (_sdpa, lambda: {"qkv": nn.Linear(16, 48), "o": nn.Linear(16, 16)}),
    "gram_matrix": (lambda m, x: m["c"](x).flatten(2) @ x.flatten(2).transpose(1, 2) / 64, lambda: {"c": _conv()}),
    "einsum": (
        lambda m, x: torch.einsum("nchw,dc->ndhw", x, m["p"].weight),
        lambda: {"p": nn.Linear(16, 8, bias=False)},
    ),
    "reflect_pad": (lambda m, x: m["c"](F.pad(x, (1, 1, 1, 1), mode="reflect")), lambda: {"c": _conv(padding=0)}),
    "circular_conv": (lambda m, x: m["c"](x), lambda: {"c": _conv(padding_mode="circular")}),
    "dilated_same": (lambda m, x: m["c"](x), lambda: {"c": _conv(padding="same", dilation=2)}),
    "grouped_conv": (lambda m, x: m["c"](x), lambda: {"c": _conv(groups=4)}),
    "conv_transpose": (lambda m, x: m["up"](x), lambda: {"up": nn.ConvTranspose2d(16, 4, 2, stride=2)}),
    "flip_roll": (lambda m, x: m["c"](torch.flip(x, [3]) + torch.roll(x, 1, 2)), lambda: {"c": _conv()}),
    "manual_layernorm": (_manual_layernorm, lambda: {"c": _conv()}),
    "where_leaky": (lambda m, x: torch.where(m["c"](x) > 0, x, 0.1 * x), lambda: {"c": _conv()}),
    "activations": (
        lambda m, x: F.relu6(F.leaky_relu(m["c"](x), 0.1)) + F.hardtanh(x) + F.softplus(x).tanh() * x,
        lambda: {"c": _conv()},
    ),
    "sqrt_abs_clamp": (lambda m, x: torch.sqrt(m["c"](x).abs() + 1e-3).clamp(max=4.0), lambda: {"c": _conv()}),
    "scaled_residual": (lambda m, x: x + 0.5 * m["c"](x), lambda: {"c": _conv()}),
    "spatial_softmax": (lambda m, x: x * F.softmax(m["c"](x).flatten(2), -1).view_as(x) * 64, lambda: {"c": _conv()}),
    "logsumexp_pool": (lambda m, x: torch.logsumexp(m["c"](x).flatten(2), -1), lambda: {"c": _conv()}),
    "topk_pool": (lambda m, x: m["c"](x).flatten(2).topk(4, -1).values.mean(-1), lambda: {"c": _conv()}),
    "cumsum": (lambda m, x: m["c"](x).cumsum(3) / 8, lambda: {"c": _conv()}),
    "gru_cell_loop": (_gru_cell_loop, lambda: {"cell": nn.GRUCell(16, 24)}),
    "pool_1d": (
        lambda m, x: F.avg_pool1d(F.max_pool1d(m["c"](x.mean(3)), 2), 2),
        lambda: {"c": nn.Conv1d(16, 16, 3, padding=1)},
    ),
    "l2_normalize": (lambda m, x: F.normalize(m["c"](x).mean((2, 3)), dim=1) * 8, lambda: {"c": _conv()}),
}


def _factory(name: str) -> Callable[[], OpNet]:
    op, layers = OPS[name]
    return lambda: OpNet(op, layers())


MODELS: dict[str, Callable[[], nn.Module]] = {name: _factory(name) for name in OPS}
