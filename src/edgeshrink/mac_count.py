"""Multiply-accumulates: the one MAC model every figure uses (profile, zoo, channel search).

Per-operation rules from tensor shapes alone, following `torch.utils.flop_counter` (FLOPs = 2 x MACs):
a convolution costs out_elements x (in_channels / groups) x kernel elements (input elements for a
transposed one), a matrix product out_elements x inner size, attention q_rows x k_rows x (d_q + d_v).
They are applied to the nodes of an exported graph (`measure.graph`), to the aten operations a forward
pass dispatches (`count_macs`, no export needed), and to a layer's output in a forward hook
(`layer_macs`, the channel search's estimator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from edgeshrink.example_inputs import zero_input

Shape = Sequence[int]
CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}
CONV_TRANSPOSED = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
MATMUL = {"mm", "bmm", "matmul"}
MATMUL_BIAS = {"addmm", "baddbmm"}
RECURRENT = {"gru", "lstm", "rnn_tanh", "rnn_relu"}


def conv_macs(out_shape: Shape, in_shape: Shape, weight_shape: Shape, transposed: bool = False) -> int:
    """Each output (or, transposed, each input) element takes weight[0]-slice many MACs."""
    return math.prod(in_shape if transposed else out_shape) * math.prod(weight_shape[1:])


def matmul_macs(out_shape: Shape, inner: int) -> int:
    return math.prod(out_shape) * inner


def recurrent_macs(input_shape: Shape, batch_first: bool, weight_shapes: Sequence[Shape]) -> int:
    """A GRU / LSTM / RNN: every step multiplies each input-hidden, hidden-hidden (and projection) matrix
    with one vector per sequence, in every layer and direction."""
    if len(input_shape) == 3:
        steps, batch = (input_shape[1], input_shape[0]) if batch_first else (input_shape[0], input_shape[1])
    else:  # unbatched (T, features)
        steps, batch = (input_shape[0], 1) if input_shape else (0, 0)
    return steps * batch * sum(math.prod(w) for w in weight_shapes if len(w) == 2)


def aten_macs(
    name: str, shapes: list[tuple[int, ...]], out: tuple[int, ...], transposed: bool = False
) -> tuple[int, int | None]:
    """(dense MACs, index of the weight operand or None) of one aten operation, from the shapes of its
    tensor arguments (in order; () for non-tensors) and of its output."""
    if name in CONV or name in CONV_TRANSPOSED:
        return conv_macs(out, shapes[0], shapes[1], transposed or name in CONV_TRANSPOSED), 1
    if name == "linear":
        return matmul_macs(out, shapes[1][1]), 1
    if name in MATMUL or name in MATMUL_BIAS:
        a = 0 if name in MATMUL else 1
        inner = shapes[a][-1] if shapes[a] else 1
        return matmul_macs(out, inner), a + 1
    if name == "scaled_dot_product_attention" or name.startswith("_scaled_dot_product"):
        q, k, v = shapes[:3]
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1]), None
    return 0, None


def _shape(x: object) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape) if isinstance(x, torch.Tensor) else ()


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._overloadpacket.__name__
        if name in RECURRENT and len(args) >= 3 and isinstance(args[2], list | tuple):
            batch_first = bool(args[-1]) if isinstance(args[-1], bool) else False
            self.total += recurrent_macs(_shape(args[0]), batch_first, [_shape(w) for w in args[2]])
            return out
        if name == "mkldnn_rnn_layer":  # oneDNN's LSTM on CPU: one call per layer and direction
            # args: input, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden_size,
            # num_layers, has_biases, bidirectional, batch_first
            self.total += recurrent_macs(_shape(args[0]), bool(args[14]), [_shape(args[1]), _shape(args[2])])
            return out
        transposed = name in {"convolution", "_convolution"} and len(args) > 6 and bool(args[6])
        first = out[0] if isinstance(out, tuple | list) else out
        self.total += aten_macs(name, [_shape(a) for a in args], _shape(first), transposed)[0]
        return out


def count_macs(model: nn.Module, input_shape: Shape, batch_size: int = 1) -> int:
    """Dense MACs of one forward pass on a zero input of `input_shape` (without the batch dimension; an
    `InputShape` that records integer token ids gives zero ids)."""
    was_training = model.training
    model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # fused attention kernels would hide their matmuls
    try:
        with torch.no_grad(), _Counter() as counter:
            model(zero_input(model, input_shape, batch_size))
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.total


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of a Conv or Linear layer that produced `output` (the rules above, from a forward hook)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        return matmul_macs(output.shape, weight.shape[1])
    transposed = isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d)
    if transposed:
        raise ValueError("layer_macs needs the input shape of a transposed convolution; count the model instead")
    return conv_macs(output.shape, (), weight.shape)
