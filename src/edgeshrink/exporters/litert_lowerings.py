"""What litert-torch 0.10 lacks for models users write, added to its tables before a conversion: each function
registers once per process and changes only the operator it names (tflite_build.convert calls them)."""

from __future__ import annotations

import torch


def decompose_adaptive_max_pool() -> None:
    """Write adaptive max pooling as operators LiteRT has, before litert-torch's passes.

    litert-torch 0.10 has no lowering for aten.adaptive_max_pool2d (nor the 1-D form, which reaches it);
    torch's own decomposition writes global pooling as amax and, when the output size divides the input's, a
    max_pool2d. Other sizes stay as they are and are refused as an operator LiteRT lacks."""
    from litert_torch import fx_infra

    op = torch.ops.aten.adaptive_max_pool2d.default
    if op not in fx_infra.decomp.pre_convert_decomp():
        fx_infra.decomp.update_pre_convert_decomp(torch._decomp.get_decompositions([op]))


def topk_as_tflite_topk() -> None:
    """Lower torch.topk and torch.sort to TFLite's TOPK_V2, which LiteRT's interpreter runs.

    By default litert-torch 0.10 lowers both to StableHLO's sort, for which the interpreter has no kernel (the
    file does not load); its own decomposition of topk to tfl.topk_v2 is used only under an environment switch
    that changes every other operator's lowering too. That one decomposition is added, after the layout pass
    (which knows aten.topk and aten.sort), for the largest values; the smallest are the largest of the negated
    input, and a sort is a top-k of the whole dimension. A k-th value and a median (the lower one, as PyTorch's)
    are written as the k smallest before the layout pass, which has no rule for them."""
    from litert_torch import fx_infra

    aten = torch.ops.aten
    if fx_infra.decomp.pre_lower_decomp().get(aten.topk.default) is _topk:
        return
    fx_infra.decomp.add_pre_convert_decomp(aten.kthvalue.default, _kthvalue)
    fx_infra.decomp.add_pre_convert_decomp(aten.median.dim, _median)
    fx_infra.decomp.add_pre_lower_decomp(aten.topk.default, _topk)
    fx_infra.decomp.add_pre_lower_decomp(aten.sort.default, _sort)
    fx_infra.decomp.add_pre_lower_decomp(aten.sort.stable, _stable_sort)


def _topk(x: torch.Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):  # noqa: A002
    from litert_torch.backend.experimental import torch_tfl

    largest_only = torch_tfl.decomps[torch.ops.aten.topk.default]
    if largest:
        return largest_only(x, k, dim, True, sorted)
    values, indices = largest_only(-x, k, dim, True, sorted)
    return -values, indices


def _sort(x: torch.Tensor, dim: int = -1, descending: bool = False):
    return _topk(x, x.shape[dim], dim, descending)


def _stable_sort(x: torch.Tensor, *, stable: bool | None = None, dim: int = -1, descending: bool = False):
    return _sort(x, dim, descending)


def _kthvalue(x: torch.Tensor, k: int, dim: int = -1, keepdim: bool = False):
    values, indices = torch.ops.aten.topk.default(x, k, dim, False, True)
    values, indices = values.narrow(dim, k - 1, 1), indices.narrow(dim, k - 1, 1)
    return (values, indices) if keepdim else (values.squeeze(dim), indices.squeeze(dim))


def _median(x: torch.Tensor, dim: int, keepdim: bool = False):
    return _kthvalue(x, (x.shape[dim] + 1) // 2, dim, keepdim)


def elementwise_layout_rewriters() -> None:
    """Tell litert-torch's NHWC layout pass that ELU (and SELU, which lowers to it) is elementwise.

    litert-torch 0.10 has no NHWC rewriter for aten.elu, so ELU stays NCHW; in an int8 graph the transposes
    it then places around ELU's quantize/dequantize pair do not reach the residual add or gate beside it, and
    conversion fails with a broadcast error (x + elu(x) after a convolution). ELU is elementwise, so the
    layout pass's own no-op rewriter is the right one."""
    from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_rewrite

    if torch.ops.aten.elu.default not in layout_rewrite.rewriters:
        layout_rewrite.rewriters.register(torch.ops.aten.elu)(lambda node: None)
