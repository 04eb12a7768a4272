"""Is a per-tensor weight scale what makes a peer's int8 file faster than ours? Rewrite ours and time it.

    python benchmarks/per_tensor_weights.py runs/quant-zen4/lenet5/int8-ptq.onnx runs/per-tensor/lenet5.onnx
    python benchmarks/ort_retime.py --batch 1 --runs 1000 --repeats 9 runs/quant-zen4/lenet5/int8-ptq.onnx \
        runs/per-tensor/lenet5.onnx runs/quant-zen4/lenet5/brevitas-ptq.onnx

Reads an int8 QDQ file written by `edgeshrink export` (weights `L.weight_quantized` with per-channel
`L.weight_scale`, biases `L.bias_quantized` at input scale x weight scale) and writes the same graph with one
scale per weight tensor: the largest of its channel scales (so no code leaves -127..127), each code re-rounded
to it, each int32 bias re-rounded to the input scale x that scale. The file computes slightly different
numbers (coarser weights in the channels with smaller ranges): it answers a question about speed, it is not
something to ship. Prints the largest re-rounding error in each layer's own steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _arrays(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _replace(tensors: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    tensors[name].CopyFrom(numpy_helper.from_array(value, name))


def per_tensor(model: onnx.ModelProto) -> dict[str, float]:
    """Every per-channel weight (and its bias) on one scale per tensor, in place; the largest re-rounding
    error of each layer, in steps of the new scale."""
    tensors = _arrays(model)
    errors = {}
    for name in [n[: -len(".weight_scale")] for n in tensors if n.endswith(".weight_scale")]:
        scales = numpy_helper.to_array(tensors[f"{name}.weight_scale"]).astype(np.float64)
        if scales.ndim == 0 or scales.size == 1:
            continue
        codes = numpy_helper.to_array(tensors[f"{name}.weight_quantized"]).astype(np.float64)
        shape = (-1,) + (1,) * (codes.ndim - 1)
        scale = scales.max()
        exact = codes * (scales / scale).reshape(shape)
        new = np.clip(np.round(exact), -127, 127)
        errors[name] = float(np.abs(new - exact).max())
        _replace(tensors, f"{name}.weight_quantized", new.astype(np.int8))
        _replace(tensors, f"{name}.weight_scale", np.array(scale, dtype=np.float32))
        _replace(tensors, f"{name}.weight_zero_point", np.array(0, dtype=np.int8))
        if f"{name}.bias_scale" in tensors:
            bias_scales = numpy_helper.to_array(tensors[f"{name}.bias_scale"]).astype(np.float64)
            input_scale = float(np.median(bias_scales / scales))
            bias = numpy_helper.to_array(tensors[f"{name}.bias_quantized"]).astype(np.float64) * bias_scales
            _replace(tensors, f"{name}.bias_quantized", np.round(bias / (input_scale * scale)).astype(np.int32))
            _replace(tensors, f"{name}.bias_scale", np.array(input_scale * scale, dtype=np.float32))
            _replace(tensors, f"{name}.bias_zero_point", np.array(0, dtype=np.int32))
    for node in model.graph.node:  # per-tensor DequantizeLinear of the rewritten tensors takes no axis
        if node.op_type == "DequantizeLinear" and node.input[0].rsplit(".", 1)[0] in errors:
            kept = [a for a in node.attribute if a.name != "axis"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    model = onnx.load(str(args.source))
    errors = per_tensor(model)
    if not errors:
        raise SystemExit(f"{args.source}: no per-channel weight scales found (not an edgeshrink int8 file?)")
    onnx.checker.check_model(model)
    args.target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.target))
    for name, err in errors.items():
        print(f"{name}: per-tensor scale, largest re-rounding {err:.2f} steps")
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
