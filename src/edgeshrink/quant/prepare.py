"""Turn a float model into a fake-quantized one whose quantization points are exactly where ONNX
Runtime's QDQ kernels need them.

The model is traced with torch.fx, BatchNorm is folded into the preceding convolution, and
activation quantizers (`ActQuant`) are inserted:
- at the input of every quantized layer (Conv1d/Conv2d/Linear) and of every concat, global average
  pool, and sum or product of two tensors (a residual, a squeeze-excite gate), unless that tensor is already
  quantized (a sum or product with a constant stays float);
- at the output of every quantized layer, after its ReLU/ReLU6 when that is the only consumer (so the
  runtime fuses Conv+ReLU into one integer kernel), and at the output of add/concat/pooling/product
  (likewise after a ReLU that is its only consumer: a residual add and its ReLU become one QLinearAdd);
- hardswish is run as x * hardsigmoid(x) (`split_hardswish`): the hardsigmoid's output gets a quantizer,
  so the product is a QLinearMul instead of a float Mul between DequantizeLinear and QuantizeLinear
  (ONNX Runtime has no integer hardswish; what `quantize_static` does too);
- after windowed average pools, sharing their input's quantizer (what LiteRT's AVERAGE_POOL_2D needs);
- a softmax's or sigmoid's output, where it is quantized, on the fixed grid [0, 1) in 1/256 steps, a tanh's on
  [-1, 1) in 1/128 steps (what LiteRT's int8 SOFTMAX requires and TFLite Micro's LOGISTIC and TANH write;
  op_grids.fixed_range);
- after shape-only ops (max pool, flatten, reshape, dropout, and slices with `slices_keep_grid`) of a
  quantized tensor, sharing the input's quantizer: the values are already on that grid, and the runtime
  needs a Q/DQ pair there to keep the next kernel in integers.
Weights get a `WeightQuant` parametrization on top of any pruning mask or codebook (zero point 0, so
pruned weights stay exactly zero). Layers that ONNX Runtime cannot run in integers (other weight
layers) stay float and are reported with the reason.
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from edgeshrink.errors import UnsupportedLayerError
from edgeshrink.quant.attention import decompose
from edgeshrink.quant.fakequant import ActQuant, WeightQuant, weight_below
from edgeshrink.quant.op_grids import (
    SLICES,
    average_pool,
    fixed_range,
    fused_tail,
    is_function,
    is_module,
    is_new_grid,
    passes_through,
    tensor_args,
)
from edgeshrink.quant.recurrent import attach_recurrent_quantizers, note_recurrent_rows, recurrent_quantizers
from edgeshrink.quant.saturation import RangeChoice
from edgeshrink.weights import Mask, SharedWeights, baked_copy, get_mask, get_shared

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass
class LayerPlan:
    """What happens to one weight layer: quantized to `weight_bits` or kept float, and why."""

    name: str
    type: str
    status: str  # "quantized" | "float"
    weight_bits: int | None = None
    granularity: str | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QuantPlan:
    layers: list[LayerPlan] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)  # ActQuant module names, in graph order
    folded_batchnorms: list[str] = field(default_factory=list)
    split_hardswish: int = 0  # hardswish activations run as x * hardsigmoid(x)
    sliced: int = 0  # slices of a quantized tensor on its grid (op_grids.SLICES)
    gptq_rounded: list[str] = field(default_factory=list)  # layers whose codes GPTQ chose (quant/rounding.py)
    recurrent: dict[str, int] = field(default_factory=dict)  # recurrent weight tensor -> bits (quant/recurrent.py)
    overflowing: dict[str, RangeChoice] = field(default_factory=dict)  # 16-bit pair overflows (quant/saturation.py)

    def to_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "activations": list(self.activations),
            "folded_batchnorms": list(self.folded_batchnorms),
            "gptq_rounded": list(self.gptq_rounded),
            "recurrent": dict(self.recurrent),
            "overflowing": {name: choice.to_dict() for name, choice in self.overflowing.items()},
        }


def _bake(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """A copy with plain weights, plus the masks and codebooks to put back after tracing."""
    masks, codebooks = {}, {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            mask = get_mask(module, "weight")
            if mask is not None:
                masks[name] = mask.clone()
            shared = get_shared(module, "weight")
            if shared is not None:
                codebooks[name] = (shared.centroids.detach().clone(), shared.assignment.clone())
    return baked_copy(model), masks, codebooks


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx's trace with the forward's other arguments fixed at their defaults: the first is the input, and a
    `mask=None` or `return_features=False` beside it would otherwise be a traced value its `if` cannot test."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    tracer = fx.Tracer()
    graph = tracer.trace(model, concrete_args=concrete or None)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _trace(model: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    """Trace with torch.fx and fold Conv+BatchNorm pairs (evaluation statistics)."""
    from torch.fx.experimental.optimization import fuse

    norms = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d
    bn_names = [n for n, m in model.named_modules() if isinstance(m, norms)]
    try:
        gm = fuse(_symbolic_trace(copy.deepcopy(model).eval()), inplace=True, no_trace=True)
    except Exception as exc:
        raise UnsupportedLayerError(
            f"quantization traces the model with torch.fx, which failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Make forward() free of control flow on tensor "
            "values or shapes (an if, assert or range over x.shape, x.dim() or .item(): check them outside "
            "forward), or quantize only a traceable submodule"
        ) from None
    remaining = {n for n, m in gm.named_modules() if isinstance(m, norms)}
    return gm, [n for n in bn_names if n not in remaining]


def prepare(
    model: nn.Module,
    bits: dict[str, int],
    *,
    group_size: int = 0,
    learn_scales: bool = False,
    reduced_range: bool = False,
    reduced_layers: Collection[str] = (),
    rewrite: Sequence[str] = (),
    split_hardswish: bool = False,
    slices_keep_grid: bool = False,
    recurrent_bits: int | None = None,
) -> tuple[fx.GraphModule, QuantPlan]:
    """A fake-quantized copy of `model`. `bits` maps each weight layer to quantize to its weight
    bit-width; other layers stay float. `reduced_range`: every 8-bit layer's weights in -63..63;
    `reduced_layers`: only these (quant/saturation.py chooses them). `rewrite`: attention modules to
    decompose first (what a file recorded; `quant.attention.traceable` chooses them for a new model).
    Quantizers start in mode "off" (calibrate them next). `split_hardswish`, `slices_keep_grid`: see the module
    docstring (a file records them).
    `recurrent_bits`: GRU/LSTM/RNN weight matrices stored as integer codes, computed in float (quant/recurrent.py)."""
    baked, masks, codebooks = _bake(model)
    if rewrite:
        decompose(baked, list(rewrite))
    gm, folded = _trace(baked)
    plan = QuantPlan(folded_batchnorms=folded)
    if split_hardswish:
        plan.split_hardswish = _split_hardswish(gm)
    quantized_layers = _plan_layers(gm, bits, group_size, reduced_range, set(reduced_layers), plan)
    reduced = quantized_layers if reduced_range else set(reduced_layers)
    _insert_quantizers(gm, quantized_layers, plan, learn_scales, slices_keep_grid)
    shared_layers = _attach_weight_quantizers(gm, quantized_layers, bits, masks, codebooks, group_size, reduced)
    for row in plan.layers:
        if row.name in shared_layers:
            row.granularity = "per tensor: the shared codebook on one integer grid"
    for name, mask in masks.items():
        if name not in quantized_layers:
            module = gm.get_submodule(name)
            parametrize.register_parametrization(module, "weight", Mask(mask))
    if recurrent_bits:
        plan.recurrent = attach_recurrent_quantizers(gm, recurrent_bits)
        note_recurrent_rows(plan.layers, plan.recurrent)
    return gm, plan


def _split_hardswish(gm: fx.GraphModule) -> int:
    """Every hardswish (module or function) as x * hardsigmoid(x): the same values, a product of two
    tensors. Returns how many were split."""
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if not (is_module(gm, node, (nn.Hardswish,)) or is_function(node, (F.hardswish,))):
            continue
        x = node.args[0]
        with graph.inserting_after(node):
            gate = graph.call_function(F.hardsigmoid, (x,))
        with graph.inserting_after(gate):
            product = graph.call_function(operator.mul, (x, gate))
        node.replace_all_uses_with(product)
        graph.erase_node(node)
        count += 1
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return count


def _insert_quantizers(
    gm: fx.GraphModule, quantized_layers: set[str], plan: QuantPlan, learn_scales: bool, slices_keep_grid: bool
) -> None:
    """Activation quantizers where the module docstring says, recorded in `plan.activations`."""
    graph = gm.graph
    quantizer_of: dict[fx.Node, str] = {}

    def new_quantizer(after: fx.Node | None = None) -> str:
        name = f"act_quant_{len(plan.activations)}"
        fixed = fixed_range(gm, after) if after is not None else None
        gm.add_submodule(name, ActQuant(learn=learn_scales, fixed=fixed))
        plan.activations.append(name)
        return name

    def quantize_after(node: fx.Node, qname: str) -> None:
        with graph.inserting_after(node):
            qnode = graph.call_module(qname, (node,))
        node.replace_all_uses_with(qnode, delete_user_cb=lambda user: user is not qnode)
        quantizer_of[qnode] = qname

    for node in list(graph.nodes):
        if node.op in ("placeholder", "output", "get_attr") or node in quantizer_of:
            continue
        inputs = tensor_args(node)
        if node.op == "call_module" and str(node.target) in quantized_layers:
            if inputs and inputs[0] not in quantizer_of:
                quantize_after(inputs[0], new_quantizer(inputs[0]))
            quantize_after(fused_tail(gm, node), new_quantizer())
        elif average_pool(gm, node) == "windowed":
            if inputs[0] not in quantizer_of:
                quantize_after(inputs[0], new_quantizer(inputs[0]))
            quantize_after(node, quantizer_of[tensor_args(node)[0]])
        elif is_new_grid(gm, node, inputs):
            for arg in inputs:
                if arg not in quantizer_of:
                    quantize_after(arg, new_quantizer(arg))
            quantize_after(fused_tail(gm, node), new_quantizer())  # add + ReLU: one QLinearAdd, no float ReLU
        elif inputs and inputs[0] in quantizer_of:
            sliced = slices_keep_grid and is_function(node, SLICES)
            if not (sliced or passes_through(gm, node)):
                continue
            if node.users and all(u in quantizer_of for u in node.users):
                continue  # already followed by a quantizer (a fused activation)
            quantize_after(node, quantizer_of[inputs[0]])
            plan.sliced += sliced
    graph.lint()
    gm.recompile()


def _float_reason(gm: fx.GraphModule, name: str, module: nn.Module, called: set[str], bits: dict[str, int]) -> str:
    """Why a layer with parameters stays float ('' when it is quantized)."""
    type_name = type(module).__name__
    if not name:  # parameters of the model itself (a learned position table): no layer consumes them
        own = ", ".join(n for n, _ in module.named_parameters(recurse=False))
        return f"the model's own parameters ({own}) are used by elementwise ops, not by a layer: kept float"
    if isinstance(module, QUANTIZABLE) and name not in called:
        return f"runs inside {name.rsplit('.', 1)[0] or 'its parent'} (not called as a layer): no QDQ pair around it"
    if not isinstance(module, QUANTIZABLE):
        return f"unsupported op: no integer {type_name} kernel in the QDQ path"
    if name not in bits:
        return "kept in float (not selected)"
    return ""


def _plan_layers(
    gm: fx.GraphModule, bits: dict[str, int], group_size: int, reduced: bool, reduced_layers: set[str], plan: QuantPlan
) -> set[str]:
    """One plan row per module with parameters of its own (quantized, or float with the reason); returns
    the layers to quantize."""
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    quantized: set[str] = set()
    for name, module in gm.named_modules():
        if isinstance(module, ActQuant) or not any(True for _ in module.parameters(recurse=False)):
            continue
        type_name = type(module).__name__
        reason = _float_reason(gm, name, module, called, bits)
        if reason:
            plan.layers.append(LayerPlan(name or "(model)", type_name, "float", reason=reason))
            continue
        quantized.add(name)
        granularity = f"group of {group_size} input channels" if group_size and bits[name] < 8 else "per output channel"
        if (reduced or name in reduced_layers) and bits[name] == 8:
            granularity += ", range -63..63"
        plan.layers.append(LayerPlan(name, type_name, "quantized", bits[name], granularity))
    return quantized


def _attach_weight_quantizers(
    gm: fx.GraphModule,
    layers: set[str],
    bits: dict[str, int],
    masks: dict[str, torch.Tensor],
    codebooks: dict[str, tuple[torch.Tensor, torch.Tensor]],
    group_size: int,
    reduced: set[str],
) -> set[str]:
    """Masks and codebooks back on, then a WeightQuant on top; returns the layers whose codebook was kept
    (quantized on one grid per tensor, so they keep at most 2^bits distinct integer codes)."""
    shared_layers = set()
    for name in layers:
        module = gm.get_submodule(name)
        if name in masks:
            parametrize.register_parametrization(module, "weight", Mask(masks[name]))
        if name in codebooks:
            centroids, assignment = codebooks[name]
            shared = SharedWeights(centroids, assignment)
            if torch.equal(shared(module.weight), module.weight):  # not rescaled by a folded BatchNorm
                parametrize.register_parametrization(module, "weight", shared, unsafe=True)
                shared_layers.add(name)
        quantizer = WeightQuant(
            module.weight,
            bits[name],
            group_size if bits[name] < 8 else 0,
            reduced=name in reduced,
            per_tensor=name in shared_layers,
        )
        parametrize.register_parametrization(module, "weight", quantizer)
    return shared_layers


def activation_quantizers(model: nn.Module) -> list[tuple[str, ActQuant]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuant)]


def weight_quantizers(model: nn.Module) -> list[tuple[str, nn.Module, WeightQuant]]:
    """(layer name, layer, its WeightQuant) for every quantized layer."""
    out = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:  # type: ignore[union-attr]
                if isinstance(p, WeightQuant):
                    out.append((name, module, p))
    return out


def refresh_weight_scales(model: nn.Module) -> None:
    """Recompute every weight quantizer's scale from its current weights (after training moved them)."""
    with torch.no_grad():
        for _, module, quantizer in weight_quantizers(model):
            quantizer.refresh(weight_below(module, quantizer))
        for _, module, param, quantizer in recurrent_quantizers(model):
            quantizer.refresh(module.parametrizations[param].original)  # type: ignore[union-attr,index]


def per_tensor_layers(model: nn.Module) -> list[str]:
    """The quantized layers whose weights share one grid per tensor (shared codebooks)."""
    return sorted(name for name, _, q in weight_quantizers(model) if q.per_tensor)


def is_quantized(model: nn.Module) -> bool:
    return bool(activation_quantizers(model)) or bool(weight_quantizers(model))


def set_mode(model: nn.Module, mode: str) -> None:
    for _, quantizer in activation_quantizers(model):
        quantizer.mode = mode  # type: ignore[assignment]


def quantization_bits(model: nn.Module) -> tuple[dict[str, int], int, list[str]]:
    """(layer -> weight bits, group size, the layers with -63..63 weights) of a fake-quantized model."""
    layers = weight_quantizers(model)
    bits = {name: q.bits for name, _, q in layers}
    group = max((q.group_size for _, _, q in layers), default=0)
    return bits, group, sorted(name for name, _, q in layers if q.reduced)
