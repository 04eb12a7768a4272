"""Every built-in recipe on architectures the tests do not build (benchmarks/unseen_models.py): does each
complete, meet its budget or say so, load back, profile, and export ONNX and TFLite files that verify, or
refuse in one line? A robustness sweep, not an accuracy benchmark.

    python benchmarks/unseen_architectures.py --out runs/unseen.json [--models KWS1D,TinyViT] [--recipes int8]
    python benchmarks/unseen_architectures.py --set ops --out runs/unseen-ops.json   # one operator per model
    python benchmarks/unseen_architectures.py --set idioms --out runs/unseen-idioms.json   # one idiom per model

Data: scikit-learn's 8x8 digits (shipped with scikit-learn, no download). Each model trains 3 passes (Adam,
3e-3) and every recipe runs at its smallest settings (`edgeshrink.recipes.smallest_settings`: one epoch per
fine-tuning round, at most two rounds, four calibration batches), so the accuracies say little; what counts
is the outcome column. "crash" is a traceback from inside edgeshrink or a library: a bug. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

import edgeshrink
from edgeshrink.environment import cpu_model
from edgeshrink.pipeline.verify import requires_grad_off
from edgeshrink.recipes import list_recipes, load_recipe, smallest_settings
from edgeshrink.tasks.data import load_digits
from edgeshrink.train import TrainConfig, evaluate, fit

sys.path.insert(0, str(Path(__file__).parent))
import unseen_idioms  # noqa: E402
import unseen_models  # noqa: E402
import unseen_ops  # noqa: E402

SETS = {"architectures": unseen_models.MODELS, "ops": unseen_ops.MODELS, "idioms": unseen_idioms.MODELS}


# each format's file name in a run folder (tflm and tflite share the .tflite suffix)
FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "tflm": "model.tflm.tflite", "c": "c", "pte": "model.pte"}
FILES.update(coreml="model.mlpackage", ncnn="model.param")


def _exports(art, out: Path, x: torch.Tensor, formats: list[str], calibration: torch.Tensor) -> dict:
    """Each format's outcome; `calibration` (training inputs) for the formats that quantize a float model."""
    found = {}
    for fmt in formats:
        try:
            exported = edgeshrink.export(art, out / FILES[fmt], format=fmt, verify_data=[x], calibration=[calibration])
            parity = exported.parity or {}  # Core ML: checked structurally, no runtime here
            found[fmt] = {"top1_agreement": parity.get("top1_agreement"), "notes": exported.notes}
            found[fmt]["max_diff_steps"] = parity.get("max_diff_steps")  # integer files: output steps off PyTorch
        except edgeshrink.EdgeshrinkError as exc:
            found[fmt] = {"refused": str(exc)}
    return found


def sweep_case(name: str, recipe: str, build, model, init, data: dict, x, calibration, out: Path, formats) -> dict:
    """One recipe on one trained model, compressed with `data` (loaders, or train_fn/eval_fn/calibration_loader):
    its outcome, budget, reload into a fresh `build()` compared on inputs `x`, profile and exports."""
    started, step = time.perf_counter(), "compress"
    cfg = smallest_settings(load_recipe(recipe))
    rewind = init if any(getattr(s, "rewind", None) is not None for s in cfg.stages) else None
    try:
        result = edgeshrink.compress(model, cfg, out=out, progress=False, rewind_weights=rewind, **data)
        step = "load"
        art = edgeshrink.load(out, model=build())
        with torch.no_grad(), requires_grad_off(art.model, result.model):  # as compress checks its file
            same = bool(torch.equal(art.model(x), result.model(x)))
        step = "profile"
        edgeshrink.profile(art, device="cortex-m7")
        step = "export"
        budget = result.report["budget"]
        row = {"outcome": "completed", "budget_met": budget["met"], "baseline": budget["baseline"]}
        exports = _exports(art, out, x, formats, calibration)
        row.update(final=budget["final"], reloads_exactly=same, exports=exports)
    except edgeshrink.EdgeshrinkError as exc:
        row = {"outcome": "refused", "step": step, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - what the sweep looks for
        row = {"outcome": "crash", "step": step, "error": repr(exc)[:300], "traceback": traceback.format_exc()[-2000:]}
    return {"model": name, "recipe": recipe, "seconds": round(time.perf_counter() - started, 1), **row}


def run_case(name: str, build, model, init, recipe: str, digits, out: Path, formats: list[str]) -> dict:
    """One recipe on one digit model (`sweep_case` with the digits' loaders)."""
    data = {"train_loader": digits.train.loader(64, shuffle=True), "val_loader": digits.test.loader(1000)}
    x, calibration = digits.test.inputs[:200], digits.train.inputs[:256]
    return sweep_case(name, recipe, build, model, init, data, x, calibration, out, formats)


def write_results(path: Path, rows: list[dict], formats: list[str]) -> int:
    """The rows as JSON (with the CPU and torch version) and as a table; exit status 1 when any case crashed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "rows": rows}, indent=1))
    print(markdown(rows, formats))
    return 1 if any(r["outcome"] == "crash" for r in rows) else 0


def _cell(row: dict, fmt: str) -> str:
    export = row.get("exports", {}).get(fmt)
    if export is None:
        return "-"
    if "refused" in export:
        return "refused"
    return f"{export['top1_agreement']:.1f}%" if export["top1_agreement"] is not None else "written"


def markdown(rows: list[dict], formats: list[str]) -> str:
    header = f"| model | recipe | outcome | budget | {' | '.join(f'{f} top-1' for f in formats)} |"
    lines = [header, "| --- " * (4 + len(formats)) + "|"]
    for r in rows:
        budget = {True: "met", False: "missed, said so"}.get(r.get("budget_met"), "-")
        outcome = r["outcome"] if r["outcome"] != "refused" else f"refused ({r['message'][:70]}...)"
        exports = " | ".join(_cell(r, f) for f in formats)
        lines.append(f"| {r['model']} | {r['recipe']} | {outcome} | {budget} | {exports} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results")
    ap.add_argument(
        "--set", choices=SETS, default="architectures", help="unseen_models.py, unseen_ops.py or unseen_idioms.py"
    )
    ap.add_argument("--models", help="comma-separated names from the set (default: all)")
    ap.add_argument("--recipes", default=",".join(list_recipes()), help="comma-separated built-in recipes")
    ap.add_argument("--formats", default="onnx,tflite", help=f"comma-separated, of {','.join(FILES)}")
    ap.add_argument("--runs-dir", type=Path, default=None, help="default: runs/unseen, or runs/unseen-SET")
    args = ap.parse_args(argv)
    runs_dir = args.runs_dir or Path("runs/unseen" if args.set == "architectures" else f"runs/unseen-{args.set}")
    models, digits, rows = SETS[args.set], load_digits(), []
    formats = args.formats.split(",")
    for name in args.models.split(",") if args.models else models:
        torch.manual_seed(0)
        model = models[name]()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model, digits.train.loader(64, shuffle=True, repeats=3), TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
        model.eval()
        print(f"[{name}] baseline {evaluate(model, digits.test.loader(1000)):.2f}%", flush=True)
        for recipe in args.recipes.split(","):
            out = runs_dir / f"{name}-{recipe}"
            rows.append(run_case(name, models[name], model, init, recipe, digits, out, formats))
            print(f"[{name}] {recipe}: {rows[-1]['outcome']} ({rows[-1]['seconds']} s)", flush=True)
    return write_results(args.out, rows, formats)


if __name__ == "__main__":
    sys.exit(main())
