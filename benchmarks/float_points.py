"""What would int8 gain by leaving a tensor float, or by choosing ranges for the logits? Measured, not shipped.

    python benchmarks/float_points.py --data-dir ../shared/data --models gru --calibration-seeds 0,1,2,3,4 \
        --out results.json

The question behind it (issue 15): NNCF's int8 CRNN is more accurate on the test split than ours, and it
leaves the model's output and the GRU's input in float. For each calibration sample, the `int8` recipe's
model is measured as shipped and with quantizers switched off in PyTorch (what a file leaving those tensors
float would compute):
- `float-output`: the quantizers on the model's outputs (float logits);
- `float-recurrent-input`: the quantizers whose tensor a GRU/LSTM reads (the recurrent layer stays float);
- `both`;
and after a loss-aware range search (`range-refined`): each activation quantizer's scale, in execution order,
times the factor in FACTORS that gives the smallest logit error against the fp32 model on the calibration
images (the zero point kept, so the grid's zero stays exact). Held-out logit MSE against fp32 on as many
other training images, and test accuracy, means over the samples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

import edgeshrink
from edgeshrink.quant.fakequant import ActQuant
from edgeshrink.train import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_samples import (  # noqa: E402
    add_sample_options,
    int8_recipe,
    measure,
    parse_sample_args,
    run_samples,
)
from common import run_models  # noqa: E402

FACTORS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.2)
RECURRENT = (nn.GRU, nn.LSTM, nn.RNN)


def _quantizer(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The activation quantizer a node's tensor comes from, through shape-only ops (transpose, reshape)."""
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), ActQuant):
            return str(node.target)
        if node.op != "call_method" or not node.args:
            return None
        node = node.args[0]
    return None


def float_points(gm: fx.GraphModule) -> dict[str, list[str]]:
    """Quantizers on the model's outputs, and those whose tensor a recurrent layer reads."""
    outputs, recurrent = [], []
    for node in gm.graph.nodes:
        if node.op == "output":
            outputs += [q for a in node.all_input_nodes if (q := _quantizer(gm, a))]
        elif node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), RECURRENT):
            recurrent += [q for q in [_quantizer(gm, node.args[0])] if q]
    return {"float-output": outputs, "float-recurrent-input": recurrent, "both": outputs + recurrent}


@torch.no_grad()
def refine_ranges(quantized: nn.Module, model: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Each activation quantizer's scale times the factor with the smallest logit MSE against `model`."""
    references = [model(x) for x in inputs]

    def loss() -> float:
        errors = [((quantized(x) - r) ** 2).mean().item() for x, r in zip(inputs, references, strict=True)]
        return float(np.mean(errors))

    best_loss = loss()
    for quantizer in (m for m in quantized.modules() if isinstance(m, ActQuant)):
        start, best = quantizer.scale.clone(), 1.0
        for factor in FACTORS:
            quantizer.scale.copy_(start * factor)
            if (value := loss()) < best_loss:
                best_loss, best = value, factor
        quantizer.scale.copy_(start * best)


def _sample(stage: dict[str, object]):
    """The int8 recipe's model (its quantize stage updated by `stage`), with each float point switched on,
    and range-refined, on one calibration sample (see calibration_samples.py)."""

    def one_sample(model, task, data, calibration, held, reference, seed: int) -> dict[str, dict]:
        with tempfile.TemporaryDirectory() as tmp:
            result = edgeshrink.compress(
                model, int8_recipe(**stage), calibration_loader=calibration.loader(128), out=Path(tmp), seed=seed,
                arch=task.arch, progress=False,
            )  # fmt: skip
        quantized = result.model.eval()
        rows = {"int8": measure(quantized, held, reference, data)}
        for name, names in float_points(quantized).items():
            for q in names:
                quantized.get_submodule(q).mode = "off"
            rows[name] = measure(quantized, held, reference, data) | {"quantizers_off": names}
            for q in names:
                quantized.get_submodule(q).mode = "quantize"
        refine_ranges(quantized, model, [x for x, _ in calibration.loader(256)])
        rows["range-refined"] = measure(quantized, held, reference, data)
        return rows

    return one_sample


def run_model(name: str, args, progress: Progress) -> dict:
    stage = {"rounding": args.rounding} if args.rounding else {}
    entry, means = run_samples(name, args, progress, _sample(stage), "int8, float points and range search")
    return entry | {"variants": means}


def markdown(entries: list[dict]) -> str:
    lines = ["| model (fp32) | variant | held-out logit MSE vs fp32 | test accuracy |", "| --- | --- | --- | --- |"]
    for e in entries:
        for variant, r in e["variants"].items():
            lines.append(
                f"| {e['model']} ({e['fp32_test_accuracy']:.2f}%) | {variant} | {r['held_out_logit_mse']:.5f} | "
                f"{r['test_accuracy']:.3f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sample_options(parser, "gru", "runs/float-points")
    parser.add_argument("--rounding", default="", help="the int8 recipe's weight rounding instead of its own")
    return run_models("float-points", parse_sample_args(parser, argv), run_model, markdown)


if __name__ == "__main__":
    sys.exit(main())
