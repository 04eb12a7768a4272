"""Attention in layers torch.fx can see through, so that its projections run on integer kernels.

`nn.MultiheadAttention`, `nn.TransformerEncoderLayer` and `nn.TransformerEncoder` are leaves for
torch.fx (and their fused fast paths hide the projections), so quantization could only keep them in
float. `decompose` replaces them by equivalents built from plain layers: separate q, k and v `Linear`
projections (the rows of `in_proj_weight`), the scaled dot product written out, the output `Linear`,
and an encoder layer that calls its `self_attn`, `linear1`, `linear2` and norms as modules. The
parameters are the same numbers under new names; the outputs equal the original's up to float
rounding. The rewrite is recorded (`Quantization.rewritten`) so that `io.load` repeats it before
loading the stored tensors. Variants it does not cover (add_bias_kv, add_zero_attn) stay as they are.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeshrink.errors import UnsupportedLayerError


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, length, dim] -> [batch, heads, length, dim / heads]."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


class TraceableAttention(nn.Module):
    """`nn.MultiheadAttention` (same call and return) from four Linear layers and explicit attention."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            w = mha.in_proj_weight.detach()
            weights = (w[:e], w[e : 2 * e], w[2 * e :])
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        b = mha.in_proj_bias.detach() if mha.in_proj_bias is not None else None
        biases = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, bias) for w, bias in zip(weights, biases, strict=True))
        self.out_proj = copy.deepcopy(mha.out_proj)  # keeps a pruning mask on it
        self.heads = mha.num_heads
        self.scale = (e // mha.num_heads) ** -0.5
        self.dropout = mha.dropout
        self.batch_first = mha.batch_first

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise UnsupportedLayerError("attention masks are not decomposed: the attention layer stays float")
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q = _split_heads(self.q_proj(query), self.heads)
        k = _split_heads(self.k_proj(key), self.heads)
        v = _split_heads(self.v_proj(value), self.heads)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        weights = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        mixed = torch.matmul(weights, v).transpose(1, 2)
        out = self.out_proj(mixed.reshape(mixed.shape[0], mixed.shape[1], -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


class TraceableEncoderLayer(nn.Module):
    """`nn.TransformerEncoderLayer` (pre- or post-norm) calling each of its layers as a module."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        self.self_attn = TraceableAttention(layer.self_attn)
        for name in ("linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2"):
            setattr(self, name, copy.deepcopy(getattr(layer, name)))
        self.activation = layer.activation
        self.norm_first = layer.norm_first

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x, x, need_weights=False)[0])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if src_mask is not None or src_key_padding_mask is not None or is_causal:
            raise UnsupportedLayerError("attention masks are not decomposed: the encoder layer stays float")
        x = src
        if self.norm_first:
            x = x + self._attend(self.norm1(x))
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._attend(x))
        return self.norm2(x + self._feed_forward(x))


class TraceableEncoder(nn.Module):
    """`nn.TransformerEncoder`: its layers in turn, then the optional final norm."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TraceableEncoderLayer(layer) for layer in encoder.layers)
        self.norm = copy.deepcopy(encoder.norm)

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
    ) -> torch.Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, mask, src_key_padding_mask, bool(is_causal))
        return x if self.norm is None else self.norm(x)


KINDS = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.MultiheadAttention)


def _decomposable(module: nn.Module) -> bool:
    """No attention inside uses the variants TraceableAttention does not cover."""
    attention = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
    return not any(m.bias_k is not None or m.add_zero_attn for m in attention)


def _replacement(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.TransformerEncoder):
        return TraceableEncoder(module)
    if isinstance(module, nn.TransformerEncoderLayer):
        return TraceableEncoderLayer(module)
    return TraceableAttention(module)  # type: ignore[arg-type]


def decompose(model: nn.Module, only: list[str] | None = None) -> list[str]:
    """Replace (in place) the outermost attention modules of `model` by their traceable forms; `only`
    limits it to those names (what a file recorded). Returns the names replaced."""
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, KINDS) or any(name.startswith(r + ".") for r in replaced):
            continue
        if (only is not None and name not in only) or not _decomposable(module):
            continue
        parent_name, _, child = name.rpartition(".")
        model.get_submodule(parent_name).register_module(child, _replacement(module).train(module.training))
        replaced.append(name)
    missing = sorted(set(only or ()) - set(replaced))
    if missing:
        raise UnsupportedLayerError(f"the file records a rewritten attention layer {missing[0]!r} the model lacks")
    return replaced


def traceable(model: nn.Module) -> tuple[nn.Module, list[str], str]:
    """(a copy of `model` with its attention decomposed, the names rewritten, '') when torch.fx can
    trace that copy; otherwise (`model`, [], why): the attention layers then stay float as leaves."""
    if not any(isinstance(m, KINDS) for m in model.modules()):
        return model, [], ""
    copied = copy.deepcopy(model)
    names = decompose(copied)
    if not names:
        return model, [], ""
    try:
        fx.symbolic_trace(copied)
    except Exception as exc:  # masks given at call time, data-dependent control flow around attention
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return model, [], f"attention kept in float (not decomposed: {why})"
    return copied, names, ""
