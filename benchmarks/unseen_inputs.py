"""Every built-in recipe on models whose inputs or outputs differ from the digit images of the other sweeps
(benchmarks/unseen_input_models.py: token ids, feature sequences, 1-D signals, Conv3d clips, a regression
head, an embedding, weight_norm in both forms): does each complete, load back into a fresh instance, profile,
and export files that verify, or refuse in one line? A robustness sweep, not an accuracy benchmark.

    python benchmarks/unseen_inputs.py --out runs/unseen-inputs.json [--models tokens] [--recipes int8]
        [--formats onnx,tflite,tflm,c,pte,ncnn,coreml]

Classifiers get train_loader= and val_loader=; the regression head and the embedding, which have no class
labels for the built-in loop, get their own train_fn= and eval_fn= (and calibration_loader=). Synthetic
data, made here; each model trains 5 passes (Adam, 3e-3); recipes at their smallest settings. "crash" is a
traceback from inside edgeshrink or a library: a bug. Run it alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from edgeshrink.recipes import list_recipes

sys.path.insert(0, str(Path(__file__).parent))
from unseen_architectures import sweep_case, write_results  # noqa: E402
from unseen_input_models import MODELS, Case, loss, score  # noqa: E402

TRAIN = 768


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def train(model: torch.nn.Module, case: Case, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """`epochs` passes of Adam on the task's own loss (also the train_fn the non-classifiers hand compress)."""
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(epochs):
        for xb, yb in _batches(x, y):
            opt.zero_grad()
            loss(case.kind, model(xb), yb).backward()
            opt.step()
    model.eval()


def _data_kwargs(case: Case, x: torch.Tensor, y: torch.Tensor) -> dict:
    xt, yt, xv, yv = x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]
    if case.kind == "classifier":
        return {"train_loader": _batches(xt, yt), "val_loader": _batches(xv, yv, 256)}

    def train_fn(model, epochs):
        train(model, case, xt, yt, epochs)

    def eval_fn(model):
        with torch.no_grad():
            return score(case.kind, model(xv), yv)

    return {"train_fn": train_fn, "eval_fn": eval_fn, "calibration_loader": _batches(xt, yt)}


def run_case(name: str, case: Case, model, init, recipe: str, data, out: Path, formats: list[str]) -> dict:
    """One recipe on one trained model (`unseen_architectures.sweep_case` with the task's data)."""
    x, y = data
    probe = x[TRAIN : TRAIN + 200]
    return sweep_case(name, recipe, case.build, model, init, _data_kwargs(case, x, y), probe, x[:256], out, formats)


def main(
    argv: list[str] | None = None, models: dict[str, Case] = MODELS, doc: str = __doc__, runs: str = "unseen-inputs"
) -> int:
    """The sweep over `models` (unseen_forwards.py passes its own, its docstring and its runs folder)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results")
    ap.add_argument("--models", help=f"comma-separated, of {','.join(models)} (default: all)")
    ap.add_argument("--recipes", default=",".join(list_recipes()), help="comma-separated built-in recipes")
    ap.add_argument("--formats", default="onnx,tflite", help="comma-separated: onnx,tflite,tflm,c,pte,ncnn,coreml")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs") / runs)
    args = ap.parse_args(argv)
    rows, formats = [], args.formats.split(",")
    for name in args.models.split(",") if args.models else models:
        case = models[name]
        torch.manual_seed(0)
        model = case.build()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        data = case.data(torch.Generator().manual_seed(1))
        train(model, case, data[0][:TRAIN], data[1][:TRAIN], epochs=5)
        with torch.no_grad():
            print(f"[{name}] baseline {score(case.kind, model(data[0][TRAIN:]), data[1][TRAIN:]):.2f}", flush=True)
        for recipe in args.recipes.split(","):
            rows.append(run_case(name, case, model, init, recipe, data, args.runs_dir / f"{name}-{recipe}", formats))
            print(f"[{name}] {recipe}: {rows[-1]['outcome']} ({rows[-1]['seconds']} s)", flush=True)
    return write_results(args.out, rows, formats)


if __name__ == "__main__":
    sys.exit(main())
