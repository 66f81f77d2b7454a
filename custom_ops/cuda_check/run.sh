#!/usr/bin/env bash
# The GPU check of the directional-pooling CUDA kernels, in one go: needs
# nvcc and an NVIDIA GPU, not TensorFlow, Python or a network.
#
#   bash custom_ops/cuda_check/run.sh [OUTPUT_DIR] [check options]
#
# 1. prints the GPU (nvidia-smi) and nvcc's version;
# 2. builds check_directional_pool.cu for this GPU (-arch=native, else the
#    compute capability nvidia-smi reports, else sm_90), warnings on;
# 3. runs the full check (comparisons with the CPU reference and the
#    timing table) with a time budget;
# 4. runs its --quick checks again under compute-sanitizer memcheck, if
#    found (out-of-bounds accesses, launch errors).
# Everything printed also goes to OUTPUT_DIR/cuda_check.log (the sanitizer
# run's whole output to OUTPUT_DIR/memcheck.log). OUTPUT_DIR is
# the first argument, else $OUT, else $TMPDIR/tfc_cuda_check (or /tmp/...);
# the build goes to a temporary folder under $TMPDIR (or /tmp), removed at
# the end; nothing else is written. Check options (--no-timing,
# --threads N, --budget S, --dry-run) go to the check binary; $NVCC picks
# the compiler, $NVCC_FLAGS adds flags.
#
# About 2-3 minutes on an H100 (build ~15 s, check and timing ~1-2 min,
# memcheck ~30 s); the phases' timeouts bound it at 6.5 minutes. The last
# line reads "CUDA CHECK: PASS" (exit 0), "CUDA CHECK: INCOMPLETE (...)"
# (exit 4: all that ran was equal, the budget cut the rest) or
# "CUDA CHECK: FAIL (...)" (exit 1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="${OUT:-${TMPDIR:-/tmp}/tfc_cuda_check}"
if [[ $# -gt 0 && "$1" != --* ]]; then
  outdir="$1"
  shift
fi
mkdir -p "$outdir"
log="$outdir/cuda_check.log"
build="$(mktemp -d "${TMPDIR:-/tmp}/tfc_cuda_check_build.XXXXXX")"
trap 'rm -rf "$build"' EXIT

# Seconds for the phases: typically 2-3 minutes in all, at most 6.5.
BUILD_TIMEOUT=120
CHECK_TIMEOUT=180
CHECK_BUDGET=100  # no release-shape comparison starts after this (seconds)
MEMCHECK_TIMEOUT=90

main() {
  local start=$SECONDS
  echo "== tf-centernet CUDA check ($(date -u '+%Y-%m-%d %H:%M:%S UTC'); log: $log)"
  echo "== GPU"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version \
      --format=csv,noheader || timeout 30 nvidia-smi -L || true
  else
    echo "nvidia-smi not found"
  fi

  local nvcc="${NVCC:-}"
  if [[ -z "$nvcc" ]]; then
    nvcc="$(command -v nvcc || true)"
    for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
      if [[ -z "$nvcc" && -n "$dir" && -x "$dir/bin/nvcc" ]]; then nvcc="$dir/bin/nvcc"; fi
    done
  fi
  if [[ -z "$nvcc" ]]; then
    echo "nvcc not found (set NVCC or CUDA_HOME)"
    echo "CUDA CHECK: FAIL (no nvcc)"
    return 1
  fi
  echo "== nvcc: $nvcc"
  "$nvcc" --version | tail -n 2

  echo "== build"
  local binary="$build/check_directional_pool"
  # shellcheck disable=SC2206  # NVCC_FLAGS is split on purpose
  local flags=(-std=c++17 -O3 -lineinfo -Xcompiler -Wall,-Wextra,-pthread ${NVCC_FLAGS:-})
  # -arch=native, then the GPU's compute capability from nvidia-smi, then
  # sm_90 (H100). nvcc 13 only warns when native finds no GPU (and builds
  # for its default architecture): that counts as a failure here.
  local cap="" arch="" candidates=(native)
  cap="$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
    | head -n 1 | tr -d ' .' || true)"
  [[ "$cap" =~ ^[0-9]+$ ]] && candidates+=("sm_$cap")
  [[ " ${candidates[*]} " == *" sm_90 "* ]] || candidates+=(sm_90)
  for candidate in "${candidates[@]}"; do
    echo "+ nvcc -arch=$candidate ${flags[*]} -o $binary check_directional_pool.cu"
    local rc=0
    timeout "$BUILD_TIMEOUT" "$nvcc" "-arch=$candidate" "${flags[@]}" -o "$binary" \
      "$here/check_directional_pool.cu" > "$build/nvcc.log" 2>&1 || rc=$?
    cat "$build/nvcc.log"
    if [[ $rc -eq 0 ]] && ! grep -q 'Cannot find valid GPU' "$build/nvcc.log"; then
      arch="$candidate"
      break
    fi
    echo "(the build with -arch=$candidate failed or found no GPU: exit $rc)"
  done
  if [[ -z "$arch" ]]; then
    echo "CUDA CHECK: FAIL (build)"
    return 1
  fi
  echo "built with -arch=$arch in $((SECONDS - start)) s"

  echo "== check"
  local check_rc=0
  timeout "$CHECK_TIMEOUT" "$binary" --budget "$CHECK_BUDGET" "$@" || check_rc=$?
  echo "check: exit $check_rc ($((SECONDS - start)) s so far)"

  echo "== compute-sanitizer memcheck, quick checks"
  local sanitizer="" memcheck="not run (compute-sanitizer not found)"
  sanitizer="$(command -v compute-sanitizer || true)"
  for candidate in "$(dirname "$nvcc")/compute-sanitizer" \
      "$(dirname "$nvcc")/../compute-sanitizer/compute-sanitizer"; do
    if [[ -z "$sanitizer" && -x "$candidate" ]]; then sanitizer="$candidate"; fi
  done
  local memcheck_failed=0
  if [[ -n "$sanitizer" ]]; then
    local rc=0
    echo "+ $sanitizer --tool memcheck --error-exitcode 3 check_directional_pool --quick" \
      "(output: $outdir/memcheck.log)"
    timeout "$MEMCHECK_TIMEOUT" "$sanitizer" --tool memcheck --error-exitcode 3 \
      "$binary" --quick "$@" > "$outdir/memcheck.log" 2>&1 || rc=$?
    # The sanitizer's own lines (errors first), then the check's summary.
    grep '^========= ' "$outdir/memcheck.log" | head -n 40 || true
    grep '^SUMMARY' "$outdir/memcheck.log" || tail -n 5 "$outdir/memcheck.log"
    case $rc in
      0) memcheck="ok" ;;
      124) memcheck="timed out after ${MEMCHECK_TIMEOUT} s (not counted as a failure)" ;;
      3) memcheck="ERRORS (see above)"; memcheck_failed=1 ;;
      *) memcheck="FAILED (exit $rc)"; memcheck_failed=1 ;;
    esac
  fi
  echo "memcheck: $memcheck ($((SECONDS - start)) s so far)"

  echo
  echo "build: -arch=$arch; memcheck: $memcheck; check exit status: $check_rc" \
    "(0 pass, 1 mismatch, 2 CUDA error, 4 incomplete, 124 timed out); $((SECONDS - start)) s"
  if [[ $check_rc -eq 0 && $memcheck_failed -eq 0 ]]; then
    echo "CUDA CHECK: PASS"
    return 0
  fi
  if [[ $check_rc -eq 4 && $memcheck_failed -eq 0 ]]; then
    echo "CUDA CHECK: INCOMPLETE (every comparison that ran was equal; the time budget" \
      "skipped some release-shape ones)"
    return 4
  fi
  local why=()
  [[ $check_rc -ne 0 ]] && why+=("check exit $check_rc")
  [[ $memcheck_failed -ne 0 ]] && why+=("memcheck")
  local IFS=","
  echo "CUDA CHECK: FAIL (${why[*]})"
  return 1
}

set +e
main "$@" 2>&1 | tee "$log"
status=("${PIPESTATUS[@]}")
exit "${status[0]}"
