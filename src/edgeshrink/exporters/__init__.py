"""Exporters: write the formats devices run, each file checked against the model it came from.

onnx.py      PyTorch -> ONNX (fp32, fp16, QDQ int8 / sub-byte weights with edgeshrink's own scales)
qdq.py       ONNX graph rewriting: integer weight and bias initializers, activation integer type
runtime.py   ONNX Runtime sessions and latency measurement
verify.py    parity of an exported file against the PyTorch model on real inputs
tflite.py    PyTorch -> .tflite (fp32, dynamic-range int8, full int8 with edgeshrink's own scales) via litert-torch
litert_runtime.py  the LiteRT interpreter: int8 input/output (de)quantization, running and timing a file
c_array.py   a .tflite file as NAME_data.h / NAME_data.cc arrays for TFLite Micro firmware
"""
