"""More forward idioms, one per model, that neither the tests nor benchmarks/unseen_ops.py build: the same
digit classifier frame (`unseen_ops.OpNet`: conv stem, the idiom, linear head), for `unseen_architectures.py
--set idioms`. Each is written the way user code writes it (indexing with None, strided slices, a python loop
over a fixed range, BatchNorm before a convolution), since torch.fx, the quantizer's placement rules and each
exporter see the idiom, not the operator."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from unseen_ops import OpNet, _conv


def _se_sigmoid_none(m, x):  # squeeze-excite: Linear layers, sigmoid, the gate broadcast with None indexing
    s = torch.sigmoid(m["fc2"](torch.relu(m["fc1"](x.mean((2, 3))))))
    return x * s[:, :, None, None]


def _focus(m, x):  # YOLOv5's Focus: space-to-depth by four strided slices, then a conv
    return m["c"](torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


def _preact(m, x):  # pre-activation residual: BatchNorm and ReLU before the conv (nothing to fold it into)
    return x + m["c"](torch.relu(m["bn"](x)))


def _tcn(m, x):  # temporal conv net: causal left pad, dilated Conv1d, residual
    t = x.mean(2)  # (N, 16, 8)
    return t + torch.relu(m["c"](F.pad(t, (2, 0))))


def _chunk_branches(m, x):  # ShuffleNetV2 unit: split the channels, convolve one half, concatenate
    a, b = x.chunk(2, dim=1)
    return torch.cat([a, torch.relu(m["c"](b))], 1)


def _swiglu(m, x):  # SwiGLU MLP on the 64 positions as tokens
    t = x.flatten(2).transpose(1, 2)
    return m["out"](F.silu(m["gate"](t)) * m["up"](t))


def _lstm_cell_loop(m, x):  # an LSTMCell unrolled over a fixed number of steps (a python range)
    seq = x.mean(3)  # (N, 16, 8): 8 steps of 16 features
    h = c = seq.new_zeros(seq.shape[0], 24)
    for t in range(8):
        h, c = m["cell"](seq[:, :, t], (h, c))
    return h


def _elementwise_max(m, x):  # the larger of two branches, then clamp_min
    return torch.maximum(m["a"](x), m["b"](x)).clamp_min(0.1)


def _exp_log(m, x):  # log(1 + exp(x)) written out, and rsqrt of a mean square
    y = torch.log(1 + torch.exp(m["c"](x).clamp(max=10)))
    return y * torch.rsqrt(y.pow(2).mean(1, keepdim=True) + 1e-5)


def _stack_sum(m, x):  # an ensemble of three branches: stack, then sum
    return torch.stack([m["a"](x), m["b"](x), m["c"](x)], 0).sum(0)


def _asymmetric_kernels(m, x):  # inception's factorised 1x7 then 7x1
    return torch.relu(m["b"](torch.relu(m["a"](x))))


def _replicate_pad(m, x):  # padding_mode="replicate" and nn.ZeroPad2d
    return m["b"](m["pad"](m["a"](x)))


def _rnn_tanh(m, x):  # a vanilla RNN over the rows
    out, _ = m["rnn"](x.mean(2).transpose(1, 2))
    return out[:, -1]


def _embedding_text_cnn(m, x):  # token ids from the map, an Embedding, a Conv1d over the tokens
    ids = (x.mean(1).flatten(1) * 4).long().clamp(0, 31)  # (N, 64) integer tokens
    return torch.relu(m["c"](m["emb"](ids).transpose(1, 2))).amax(2)


def _decoder_layer(m, x):  # nn.TransformerDecoderLayer: self-attention on the rows, cross-attention on columns
    rows, cols = x.mean(3).transpose(1, 2), x.mean(2).transpose(1, 2)  # (N, 8, 16) each
    return m["dec"](rows, cols)


def _softmax2d_gate(m, x):  # nn.Softmax2d across the channels, a gate
    return x * m["sm"](m["c"](x))


def _max_with_indices(m, x):  # x.max(dim) returns (values, indices): only the values used
    return m["c"](x).max(dim=3).values


def _repeat_expand(m, x):  # a per-channel global context expanded back and concatenated
    g = x.mean((2, 3), keepdim=True).expand(-1, -1, 8, 8)
    return m["c"](torch.cat([x, g], 1))


def _unflatten(m, x):  # flatten to vectors, a Linear, nn.Unflatten back to a map
    return m["c"](m["unflat"](m["fc"](x.flatten(1))))


def _group_norm_1(m, x):  # GroupNorm with one group (LayerNorm over C, H, W), SELU, CELU
    return F.celu(F.selu(m["gn"](m["c"](x))))


def _avg_pool_stride(m, x):  # overlapping average pool (kernel 3, stride 2, count_include_pad=False)
    return F.avg_pool2d(m["c"](x), 3, stride=2, padding=1, count_include_pad=False)


def _bmm(m, x):  # torch.bmm between a projection and the map
    t = x.flatten(2)  # (N, 16, 64)
    return torch.bmm(m["p"](t.transpose(1, 2)).transpose(1, 2), t.transpose(1, 2)) / 64


IDIOMS: dict[str, tuple[Callable, Callable[[], dict[str, nn.Module]]]] = {
    "se_sigmoid_none": (_se_sigmoid_none, lambda: {"fc1": nn.Linear(16, 4), "fc2": nn.Linear(4, 16)}),
    "focus": (_focus, lambda: {"c": _conv(64, 16)}),
    "preact": (_preact, lambda: {"bn": nn.BatchNorm2d(16), "c": _conv()}),
    "tcn": (_tcn, lambda: {"c": nn.Conv1d(16, 16, 2, dilation=2)}),
    "chunk_branches": (_chunk_branches, lambda: {"c": _conv(8, 8)}),
    "swiglu": (_swiglu, lambda: {"gate": nn.Linear(16, 32), "up": nn.Linear(16, 32), "out": nn.Linear(32, 8)}),
    "lstm_cell_loop": (_lstm_cell_loop, lambda: {"cell": nn.LSTMCell(16, 24)}),
    "elementwise_max": (_elementwise_max, lambda: {"a": _conv(), "b": _conv(k=1, padding=0)}),
    "exp_log": (_exp_log, lambda: {"c": _conv()}),
    "stack_sum": (_stack_sum, lambda: {"a": _conv(), "b": _conv(), "c": _conv(k=1, padding=0)}),
    "asymmetric_kernels": (
        _asymmetric_kernels,
        lambda: {"a": nn.Conv2d(16, 16, (1, 7), padding=(0, 3)), "b": nn.Conv2d(16, 16, (7, 1), padding=(3, 0))},
    ),
    "replicate_pad": (
        _replicate_pad,
        lambda: {"a": _conv(padding_mode="replicate"), "pad": nn.ZeroPad2d(1), "b": _conv(padding=0)},
    ),
    "rnn_tanh": (_rnn_tanh, lambda: {"rnn": nn.RNN(16, 24, batch_first=True)}),
    "embedding_text_cnn": (_embedding_text_cnn, lambda: {"emb": nn.Embedding(32, 12), "c": nn.Conv1d(12, 16, 3)}),
    "decoder_layer": (
        _decoder_layer,
        lambda: {"dec": nn.TransformerDecoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)},
    ),
    "softmax2d_gate": (_softmax2d_gate, lambda: {"c": _conv(), "sm": nn.Softmax2d()}),
    "max_with_indices": (_max_with_indices, lambda: {"c": _conv()}),
    "repeat_expand": (_repeat_expand, lambda: {"c": _conv(32, 16)}),
    "unflatten": (
        _unflatten,
        lambda: {"fc": nn.Linear(1024, 256), "unflat": nn.Unflatten(1, (4, 8, 8)), "c": _conv(4, 8)},
    ),
    "group_norm_1": (_group_norm_1, lambda: {"c": _conv(), "gn": nn.GroupNorm(1, 16)}),
    "avg_pool_stride": (_avg_pool_stride, lambda: {"c": _conv()}),
    "bmm": (_bmm, lambda: {"p": nn.Linear(16, 8)}),
}


def _factory(name: str) -> Callable[[], OpNet]:
    op, layers = IDIOMS[name]
    return lambda: OpNet(op, layers())


MODELS: dict[str, Callable[[], nn.Module]] = {name: _factory(name) for name in IDIOMS}
