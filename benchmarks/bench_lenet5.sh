#!/usr/bin/env bash
# `edgeshrink bench` on the LeNet-5 baseline, its int8 and its deep-compression runs (MNIST), across every
# runtime installed (ONNX Runtime, LiteRT, TFLite Micro, ExecuTorch), with the Cortex-M7 energy estimate.
#   bash benchmarks/bench_lenet5.sh ../shared/data/mnist runs/bench-lenet5
set -euo pipefail
DATA=${1:?usage: bench_lenet5.sh MNIST_DIR [OUT]}
OUT=${2:-runs/bench-lenet5}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
[ -f "$OUT/lenet5.pt" ] || "$BIN/edgeshrink" train -t mnist-lenet5 -d "$DATA" -o "$OUT/lenet5.pt" -q
for recipe in int8 deep-compression; do
  [ -f "$OUT/$recipe/model.eshrink" ] || "$BIN/edgeshrink" compress -t mnist-lenet5 -r "$recipe" -d "$DATA" \
    --weights "$OUT/lenet5.pt" -o "$OUT/$recipe" -q
done
"$BIN/edgeshrink" bench "$OUT/lenet5.pt" "$OUT/int8" "$OUT/deep-compression" -d "$DATA" --device cortex-m7 \
  --out "$OUT/bench"
