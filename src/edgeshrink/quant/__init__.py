"""Uniform quantization that a runtime executes with integer kernels.

fakequant.py   the fake-quantizers (activations per tensor, weights per channel or per group)
calibrate.py   activation ranges from calibration data: min-max, percentile, MSE, entropy (KL)
prepare.py     torch.fx: fold BatchNorm, place the quantizers where ONNX Runtime's QDQ kernels need them
passes.py      calibration, bias correction, per-layer sensitivity
"""
