#!/usr/bin/env bash
# Compiles and runs the standalone CUDA check (needs nvcc and a GPU, not
# TensorFlow). Usage: custom_ops/cuda_check/run.sh [extra nvcc flags]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/tfc_check_directional_pool"
"${NVCC:-nvcc}" -std=c++17 -O3 -arch=native "$@" -o "$out" "$here/check_directional_pool.cu"
"$out"
