"""Exporters: write the formats devices run, each file checked against the model it came from.

onnx.py      PyTorch -> ONNX (fp32, fp16, QDQ int8 / sub-byte weights with edgeshrink's own scales)
qdq.py       ONNX graph rewriting: integer weight and bias initializers, activation integer type
runtime.py   ONNX Runtime sessions and latency measurement
verify.py    parity of an exported file against the PyTorch model on real inputs
"""
