"""Which grid each operation of a traced model leaves its output on, for quant/prepare.py: a new one (a sum
or product of two tensors, a concat, a global average), its input's (max pooling, reshapes, a windowed
average), or none (float). Each choice is what ONNX Runtime's QDQ fusion and LiteRT's converter need for an
integer kernel that computes what the fake-quantized model does."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeshrink.quant.fakequant import ActQuant

FUSABLE_ACTIVATIONS_MODULES = (nn.ReLU, nn.ReLU6)
FUSABLE_ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6)
# max pooling keeps its input's grid: LiteRT's converter gives MAX_POOL_2D / REDUCE_MAX one grid for input and
# output and drops the quantizer before the pool, so a second grid after it (narrower after QAT) clips nowhere there
PASSTHROUGH_MODULES = (
    *(nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
    *(nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU, nn.ReLU6),
)
PASSTHROUGH_FUNCTIONS = (
    *(F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d),
    *(torch.flatten, torch.reshape, F.relu, torch.relu, F.dropout),
)
# a slice or index of a quantized tensor selects values on its grid: LiteRT's STRIDED_SLICE must keep one grid
# (a slice with a grid of its own, as a concat's input, failed conversion: YOLOv5's Focus space-to-depth). Files
# quantized before record no `sliced`, and load as they were (a new grid after a slice that feeds a layer)
SLICES = (operator.getitem,)
PASSTHROUGH_METHODS = ("view", "reshape", "flatten", "contiguous", "relu")
NEW_GRID_FUNCTIONS = (torch.cat, torch.mean)
NEW_GRID_METHODS = ("mean",)
# average pooling: a global one (output size 1) gets a grid of its own (LiteRT's MEAN requantizes); a windowed
# one keeps its input's grid, as LiteRT's AVERAGE_POOL_2D must (its converter moved a grid after the pool to
# before it, clipping the inputs to the narrower range of their averages; tests/test_tflite.py)
AVERAGE_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
AVERAGE_FUNCTIONS = (F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)
ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)
# a sum of two tensors (a residual): QLinearAdd; a tensor plus a constant (x.abs() + eps before a sqrt) stays
# float: on a uint8 grid from 0 the eps rounds away, and sqrt's gradient at 0 is infinite (QAT weights became nan)
SUM_FUNCTIONS = (operator.add, torch.add)
SUM_METHODS = ("add",)
# a product of two tensors (a squeeze-excite gate): QLinearMul; a product with a constant stays float
PRODUCT_FUNCTIONS = (operator.mul, torch.mul)
PRODUCT_METHODS = ("mul",)


# a softmax's output gets the grid LiteRT's int8 SOFTMAX writes: [0, 1) in steps of 1/256 (zero point -128 as
# int8). A grid calibrated to the outputs seen (0..0.3 over 64 positions) is finer, but the file cannot load.
SOFTMAX_RANGE = (0.0, 255 / 256)
SOFTMAX_MODULES, SOFTMAX_FUNCTIONS, SOFTMAX_METHODS = (
    (nn.Softmax, nn.Softmax2d),
    (F.softmax, torch.softmax),
    ("softmax",),
)
LAYOUT_METHODS = ("view", "view_as", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze")
LAYOUT_FUNCTIONS = (torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze)


# TFLite Micro's int8 LOGISTIC and TANH kernels write their outputs on fixed grids whatever the file says (sigmoid:
# 1/256 steps from zero point -128; tanh: 1/128 steps around 0; only the zero point is checked), where LiteRT
# builds a table for the file's grid: a calibrated sigmoid grid put TFLM 19 output steps off PyTorch.
SIGMOID_RANGE, TANH_RANGE = (0.0, 255 / 256), (-1.0, 127 / 128)
FIXED_RANGES = (
    (SOFTMAX_MODULES, SOFTMAX_FUNCTIONS, SOFTMAX_METHODS, SOFTMAX_RANGE),
    ((nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",), SIGMOID_RANGE),
    ((nn.Tanh,), (torch.tanh, F.tanh), ("tanh",), TANH_RANGE),
)


def fixed_range(gm: fx.GraphModule, node: fx.Node) -> tuple[float, float] | None:
    """The range a quantizer after `node` must have whatever calibration sees (a softmax's, sigmoid's or tanh's
    output, through reshapes), or None."""
    for _ in range(8):
        for modules, functions, methods, grid in FIXED_RANGES:
            if is_module(gm, node, modules) or is_function(node, functions, methods):
                return grid
        if not is_function(node, LAYOUT_FUNCTIONS, LAYOUT_METHODS) or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
    return None


def is_module(gm: fx.GraphModule, node: fx.Node, types: tuple) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), types)


def is_function(node: fx.Node, functions: tuple, methods: tuple = ()) -> bool:
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def tensor_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    for arg in node.args:
        if isinstance(arg, fx.Node):
            out.append(arg)
        elif isinstance(arg, list | tuple):
            out.extend(a for a in arg if isinstance(a, fx.Node))
    return out


def fused_tail(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The node whose output is quantized after a layer: its ReLU/ReLU6 when that is the only consumer."""
    users = list(node.users)
    if len(users) == 1 and (
        is_module(gm, users[0], FUSABLE_ACTIVATIONS_MODULES)
        or is_function(users[0], FUSABLE_ACTIVATION_FUNCTIONS, ("relu",))
    ):
        return users[0]
    return node


def is_new_grid(gm: fx.GraphModule, node: fx.Node, inputs: list[fx.Node]) -> bool:
    """An op whose output gets a grid of its own: add, concat, average pool, a product of two tensors."""
    if any(is_shape_value(a) for a in inputs):
        return False
    if is_function(node, PRODUCT_FUNCTIONS, PRODUCT_METHODS) or is_function(node, SUM_FUNCTIONS, SUM_METHODS):
        return len(inputs) == 2
    return average_pool(gm, node) == "global" or is_function(node, NEW_GRID_FUNCTIONS, NEW_GRID_METHODS)


def average_pool(gm: fx.GraphModule, node: fx.Node) -> str:
    """'global' for an average pool to one value per channel, 'windowed' for other average pools, else ''."""
    if is_module(gm, node, AVERAGE_MODULES):
        module = gm.get_submodule(str(node.target))
        size = getattr(module, "output_size", None) if isinstance(module, ADAPTIVE) else 0
    elif is_function(node, AVERAGE_FUNCTIONS):
        adaptive = node.target in ADAPTIVE
        size = (node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")) if adaptive else 0
    else:
        return ""
    sizes = size if isinstance(size, list | tuple) else [size]
    return "global" if all(s == 1 for s in sizes) else "windowed"


def passes_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    indices = node.op == "call_module" and getattr(gm.get_submodule(str(node.target)), "return_indices", False)
    if indices or node.kwargs.get("return_indices"):
        return False  # (values, indices): not one tensor on the input's grid
    return is_module(gm, node, PASSTHROUGH_MODULES) or is_function(node, PASSTHROUGH_FUNCTIONS, PASSTHROUGH_METHODS)


# Python arithmetic fx records on numbers taken from shapes (`(C // heads) ** -0.5`, `H * W`, `N / 2`)
SHAPE_ARITHMETIC = (
    operator.mul,
    operator.add,
    operator.sub,
    operator.floordiv,
    operator.truediv,
    operator.pow,
    operator.mod,
    operator.neg,
    operator.getitem,
)


def is_shape_value(node: fx.Node) -> bool:
    """A number computed from tensor shapes (x.shape[1] * x.shape[2], x.size(0)), not a tensor."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] == "shape"
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target in SHAPE_ARITHMETIC:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        return bool(args) and all(is_shape_value(a) for a in args)
    return False


def input_quantizer(gm: fx.GraphModule, layer: str) -> ActQuant | None:
    """The activation quantizer whose grid a layer's input is on (through shape-only ops), if any."""
    node = next((n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer), None)
    for _ in range(8):
        if node is None or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), ActQuant):
            return gm.get_submodule(str(node.target))
    return None
