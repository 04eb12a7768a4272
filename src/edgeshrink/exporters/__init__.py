"""Exporters: write the formats devices run, each file checked in its runtime before it is written.

base.py          the registry (`register_exporter`, `list_exporters`, `get_exporter`) and the contract
                 (build -> run in the runtime -> compare -> write), `export_model`
onnx.py          --format onnx (onnx_build.py: PyTorch -> ONNX; qdq.py: integer initializers, U8S8/S8S8;
                 onnx_simplify.py: GlobalAveragePool for the exporter's spatial ReduceMean)
tflite.py        --format tflite (tflite_build.py: litert-torch, float16 / dynamic / full int8)
pte.py           --format pte (ExecuTorch, XNNPACK delegate, fp32 / int8)
coreml.py        --format coreml (palettized / sparse weights; coreml_check.py: the structural check on Linux)
ncnn.py          --format ncnn (pnnx: NAME.param + NAME.bin, fp16 / fp32 weights, verified in ncnn)
tflm.py          --format tflm (TFLite Micro with DECODE-compressed weights; tflm_compress.py, tflm_prepare.py)
reference.py     the int8 PyTorch model a full-integer file reproduces
c_array.py       --format c: a .tflite as NAME_data.h / NAME_data.cc for TFLite Micro firmware
verify.py        parity of an exported file against the PyTorch model on real inputs
"""
