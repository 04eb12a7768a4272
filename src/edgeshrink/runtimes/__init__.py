"""The runtimes a device runs exported files in, as seen from here: ONNX Runtime (onnxruntime.py), LiteRT
(litert.py), TensorFlow Lite Micro (tflm.py) and ExecuTorch (executorch.py) sessions that load bytes, run
float batches and time calls (timing.py). Exporters verify with them; measurement times with them."""
