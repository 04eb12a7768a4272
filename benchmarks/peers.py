"""Peer int8 quantizers, each run on the same fp32 model and the same calibration images, each writing a
QDQ .onnx file that ONNX Runtime runs (what benchmarks/quantization.py compares side by side).

The peers are optional (`pip install -e ".[peers]"`, and brevitas with `--no-deps` beside
`dependencies==2.0.1` and `unfoldNd`: it caps setuptools below the version this environment has).
../shared/ENVIRONMENT.md records how each runs beside torch 2.13:
- torchao 0.18 PT2E with `X86InductorQuantizer` (static, per-channel weights), exported with
  `torch.onnx.export(dynamo=True)`;
- NNCF 3.4 through its ONNX backend (`nncf.quantize` on the fp32 .onnx file; its torch backend
  exports FakeQuantize ops ONNX Runtime rejects);
- brevitas 0.13 post-training quantization (int8 weights per channel, uint8 activations), exported with
  `export_onnx_qcdq`.
Each takes (fp32 model, fp32 .onnx path, calibration inputs, output path) and returns the written path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

Peer = Callable[[nn.Module, Path, torch.Tensor, Path], Path]


def _batches(calibration: torch.Tensor, size: int = 128) -> list[torch.Tensor]:
    return list(calibration.split(size))


def torchao_x86_inductor(model: nn.Module, fp32_path: Path, calibration: torch.Tensor, out: Path) -> Path:
    """torchao PT2E: export, prepare with X86InductorQuantizer's default (static) config, calibrate,
    convert, export the quantize/dequantize graph to ONNX."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (calibration[:2],)  # batch 2: torch.export specialises a batch of 1
    batch = torch.export.Dim("batch")
    graph = torch.export.export(model.eval(), example, dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in _batches(calibration):
            prepared(x)
    converted = convert_pt2e(prepared)
    torch.onnx.export(
        converted, example, str(out), dynamo=True, external_data=False, input_names=["input"],
        dynamic_shapes=({0: batch},),
    )  # fmt: skip
    return out


def nncf_onnx(model: nn.Module, fp32_path: Path, calibration: torch.Tensor, out: Path) -> Path:
    """NNCF's ONNX backend on the fp32 file (default preset: symmetric per-channel weights, per-tensor
    activations, its own range estimators and bias correction)."""
    os.environ.setdefault("NNCF_CI", "1")  # no telemetry, no writes under ~/intel
    import nncf
    import onnx

    fp32 = onnx.load(str(fp32_path))
    name = fp32.graph.input[0].name
    data = nncf.Dataset(_batches(calibration), lambda x: {name: x.numpy()})
    quantized = nncf.quantize(fp32, data, subset_size=len(calibration))
    onnx.save(quantized, str(out))
    return out


def brevitas_ptq(model: nn.Module, fp32_path: Path, calibration: torch.Tensor, out: Path) -> Path:
    """brevitas graph-mode PTQ: layers replaced by int8 (per-channel weights, uint8 activations),
    activation ranges calibrated, biases corrected, exported as QCDQ ONNX."""
    import copy

    from brevitas.export import export_onnx_qcdq
    from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
    from brevitas.graph.quantize import preprocess_for_quantize, quantize

    prepared = preprocess_for_quantize(copy.deepcopy(model).eval())
    quantized = quantize(prepared).eval()
    with torch.no_grad():
        with calibration_mode(quantized):
            for x in _batches(calibration):
                quantized(x)
        with bias_correction_mode(quantized):
            for x in _batches(calibration):
                quantized(x)
    export_onnx_qcdq(
        quantized, args=calibration[:1], export_path=str(out), dynamo=False, input_names=["input"],
        output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )  # fmt: skip
    return out


PEERS: dict[str, Peer] = {
    "torchao-x86-inductor": torchao_x86_inductor,
    "nncf-onnx": nncf_onnx,
    "brevitas-ptq": brevitas_ptq,
}


def available_peers() -> dict[str, str]:
    """Peer name -> '' when its package imports, else why not (the [peers] extra is missing)."""
    modules = {"torchao-x86-inductor": "torchao", "nncf-onnx": "nncf", "brevitas-ptq": "brevitas"}
    status = {}
    for peer, module in modules.items():
        try:
            __import__(module)
            status[peer] = ""
        except ImportError as exc:
            status[peer] = f"{module} is not installed ({exc}); pip install -e '.[peers]'"
    return status
