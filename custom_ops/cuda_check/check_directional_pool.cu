// Standalone GPU check of the CUDA directional-pooling kernels: no
// TensorFlow, no Python. Drives directional_pool_cuda.cuh (the very code
// the op library compiles) through the checks of harness.h: forward and
// backward of the four directions and of the corner, cascade-corner and
// center compositions, in float32, float64, float16 and bfloat16, on odd
// small shapes and the releases' shapes, with ties (-0 and +0 among them),
// +-extremes and NaN, on the launchers' grid and on a capped grid (the
// grid-stride loop), against the CPU reference; and times every kernel
// against a device-to-device copy of the same bytes.
//
//   nvcc -std=c++17 -O3 -arch=native -Xcompiler -pthread -o /tmp/check
//       custom_ops/cuda_check/check_directional_pool.cu && /tmp/check
//
// (custom_ops/cuda_check/run.sh does this and more). Options:
//   --quick       small shapes, two dtypes, no timing (for compute-sanitizer)
//   --no-timing   skip the timing table
//   --threads N   host threads for the reference (default: all, at most 16)
//   --budget S    start no release-shape comparison after S seconds
//                 (those left are reported as skipped, exit status 4)
//   --dry-run     tiny stand-ins for the releases' shapes, sampled
//                 conversions, 3 timed runs: the whole flow in seconds
// Exit status 0 when every comparison is equal, 1 when one is not, 2 on a
// CUDA error (or no device), 4 when --budget skipped some comparisons.
// Ends with one line "SUMMARY: PASS|FAIL|INCOMPLETE: ...". Not part of CI:
// it needs a GPU.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "../cc/kernels/directional_pool_cuda.cuh"
#include "harness.h"

namespace kernels = tensorflow::tf_centernet::cuda;

#define CHECK_CUDA(expr)                                                              \
  do {                                                                                \
    const cudaError_t err_ = (expr);                                                  \
    if (err_ != cudaSuccess) {                                                        \
      std::printf("CUDA ERROR %s:%d %s: %s\nSUMMARY: FAIL (CUDA error)\n", __FILE__, \
                  __LINE__, #expr, cudaGetErrorString(err_));                         \
      std::fflush(stdout);                                                            \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

template <typename S>
struct DeviceType;
template <>
struct DeviceType<F32> {
  using T = float;
};
template <>
struct DeviceType<F64> {
  using T = double;
};
template <>
struct DeviceType<F16> {
  using T = __half;
};
template <>
struct DeviceType<BF16> {
  using T = __nv_bfloat16;
};

unsigned int AddBlocks(int64_t n) {
  const int64_t blocks = (n + kernels::kThreadsPerBlock - 1) / kernels::kThreadsPerBlock;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65536)));
}

// The kernels on the GPU, on the legacy default stream, as Ops for harness.h.
// grid 0: the launchers' grid capped at DeviceMaxBlocks(), as the op does.
template <typename S>
struct CudaOps {
  using T = typename DeviceType<S>::T;
  using Bits = typename S::Bits;
  using Tensor = T*;
  static_assert(sizeof(T) == sizeof(Bits), "storage");
  int64_t n;
  int max_blocks;
  std::vector<T*> owned;
  const char* error = nullptr;
  CudaOps(int64_t n_, int grid) : n(n_), max_blocks(grid > 0 ? grid : kernels::DeviceMaxBlocks()) {}
  ~CudaOps() {
    for (T* p : owned) cudaFree(p);
  }
  Tensor New() {
    T* p = nullptr;
    CHECK_CUDA(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)));
    owned.push_back(p);
    return p;
  }
  void Upload(Tensor t, const std::vector<Bits>& v) {
    CHECK_CUDA(cudaMemcpy(t, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void Download(Tensor t, std::vector<Bits>* v) {
    v->resize(n);
    CHECK_CUDA(cudaMemcpy(v->data(), t, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  void Note(const char* e) {
    if (e && !error) error = e;
  }
  void Pool(const ScanShape& s, Tensor x, Tensor y) {
    Note(kernels::LaunchForward<T>(s, x, y, max_blocks, 0));
  }
  void PoolGrad(const ScanShape& s, Tensor, Tensor y, Tensor g, Tensor dx) {
    Note(kernels::LaunchBackward<T>(s, y, g, dx, max_blocks, 0));
  }
  void Add(int64_t count, Tensor a, Tensor b, Tensor c) {
    AddKernel<T><<<AddBlocks(count), kernels::kThreadsPerBlock>>>(count, a, b, c);
    const cudaError_t e = cudaGetLastError();
    Note(e == cudaSuccess ? nullptr : cudaGetErrorString(e));
  }
  const char* Finish() {
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) Note(cudaGetErrorString(e));
    return error;
  }
};

// ---------------------------------------------------------------- conversions

// The reference's float <-> float16/bfloat16 conversions (reference.h)
// against the device's, which the kernels use (static_cast), on every
// float (stride 1) or a sample (--quick): exactness of the 16-bit checks
// rests on them being the same rounding.
__global__ void ConversionKernel(uint64_t stride, unsigned long long* bad, unsigned int* first) {
  const uint64_t threads = static_cast<uint64_t>(blockDim.x) * gridDim.x;
  unsigned long long local = 0;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i * stride < (uint64_t{1} << 32); i += threads) {
    const uint32_t u = static_cast<uint32_t>(i * stride);
    const float f = BitsFloat(u);
    const __half h = static_cast<__half>(f);
    const __nv_bfloat16 b = static_cast<__nv_bfloat16>(f);
    const uint16_t hb = __half_as_ushort(h), bb = __bfloat16_as_ushort(b);
    const uint16_t hr = FloatToHalfBits(f), br = FloatToBf16Bits(f);
    const bool nan = f != f;
    bool ok = nan ? (HalfBitsToFloat(hb) != HalfBitsToFloat(hb) && Bf16BitsToFloat(bb) != Bf16BitsToFloat(bb))
                  : (hb == hr && bb == br);
    if (u < 65536) {  // every 16-bit pattern back to float
      const uint16_t p = static_cast<uint16_t>(u);
      const float hf = static_cast<float>(__ushort_as_half(p)), bf = static_cast<float>(__ushort_as_bfloat16(p));
      const float hr2 = HalfBitsToFloat(p), br2 = Bf16BitsToFloat(p);
      ok = ok && (hf != hf ? hr2 != hr2 : FloatBits(hf) == FloatBits(hr2)) &&
           (bf != bf ? br2 != br2 : FloatBits(bf) == FloatBits(br2));
    }
    if (!ok) {
      ++local;
      atomicMin(first, u);
    }
  }
  if (local) atomicAdd(bad, local);
}

bool CheckConversions(bool quick) {
  unsigned long long* bad;
  unsigned int* first;
  CHECK_CUDA(cudaMalloc(&bad, sizeof *bad));
  CHECK_CUDA(cudaMalloc(&first, sizeof *first));
  CHECK_CUDA(cudaMemset(bad, 0, sizeof *bad));
  CHECK_CUDA(cudaMemset(first, 0xff, sizeof *first));
  const uint64_t stride = quick ? 4099 : 1;
  ConversionKernel<<<4096, 256>>>(stride, bad, first);
  CHECK_CUDA(cudaGetLastError());
  unsigned long long host_bad = 0;
  unsigned int host_first = 0;
  CHECK_CUDA(cudaMemcpy(&host_bad, bad, sizeof host_bad, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(&host_first, first, sizeof host_first, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(bad));
  CHECK_CUDA(cudaFree(first));
  std::printf("%-4s float -> float16/bfloat16 on the device equals the reference's rounding "
              "(%s floats): %llu mismatches",
              host_bad ? "FAIL" : "ok", quick ? "a sample of" : "all 2^32", host_bad);
  if (host_bad) std::printf(", first at float bits 0x%08x", host_first);
  std::printf("\n");
  return host_bad == 0;
}

// ---------------------------------------------------------------- timing

struct Row {
  std::string kernel, dtype, shape;
  float kernel_ms, copy_ms;
  double bytes;  // read + written by the kernel(s)
};

struct Timer {
  cudaEvent_t start, stop;
  void* flush = nullptr;  // written between runs so that L2 (50 MB on an H100) starts cold
  size_t flush_bytes = size_t{256} << 20;
  int warmup = 3, reps = 25;
  explicit Timer(bool dry) {
    if (dry) {
      flush_bytes = size_t{1} << 20;
      warmup = 1;
      reps = 3;
    }
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
    CHECK_CUDA(cudaMalloc(&flush, flush_bytes));
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaFree(flush);
  }
  // Median of `reps` timed runs of launch() after `warmup` untimed ones.
  float MedianMs(const std::function<void()>& launch) {
    for (int i = 0; i < warmup; ++i) launch();
    CHECK_CUDA(cudaGetLastError());
    std::vector<float> times;
    for (int i = 0; i < reps; ++i) {
      CHECK_CUDA(cudaMemsetAsync(flush, i & 0xff, flush_bytes));
      CHECK_CUDA(cudaEventRecord(start));
      launch();
      CHECK_CUDA(cudaEventRecord(stop));
      CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms);
    }
    CHECK_CUDA(cudaGetLastError());
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }
};

// Forward and backward of one program, and a device-to-device cudaMemcpy
// that reads and writes as many bytes as each.
template <typename S>
void TimeProgram(const Dims& dims, const Program& p, Timer* timer, std::vector<Row>* rows) {
  using T = typename DeviceType<S>::T;
  const int64_t n = dims.size();
  CudaOps<S> ops(n, 0);
  Run<CudaOps<S>> run(ops, p, dims);
  const std::vector<typename S::Bits> x = MakeValues<S>(n, Values::kTies, 3, 0);
  const std::vector<typename S::Bits> g = MakeGrads<S>(n, Grads::kExact, 3, 1);
  for (T* t : run.in) ops.Upload(t, x);
  ops.Upload(run.g, g);
  run.Forward();  // the intermediates the backward reads
  if (const char* error = ops.Finish()) {
    std::printf("CUDA ERROR timing %s: %s\nSUMMARY: FAIL (CUDA error)\n", p.name, error);
    std::exit(2);
  }
  for (int backward = 0; backward < 2; ++backward) {
    const float ms = timer->MedianMs([&] { backward ? run.Backward() : run.Forward(); });
    if (const char* error = ops.Finish()) {
      std::printf("CUDA ERROR timing %s: %s\nSUMMARY: FAIL (CUDA error)\n", p.name, error);
      std::exit(2);
    }
    const double bytes = static_cast<double>(run.touched) * sizeof(T);
    const size_t copy_bytes = static_cast<size_t>(bytes / 2);
    void *src, *dst;
    CHECK_CUDA(cudaMalloc(&src, copy_bytes));
    CHECK_CUDA(cudaMalloc(&dst, copy_bytes));
    CHECK_CUDA(cudaMemset(src, 0, copy_bytes));
    const float copy_ms = timer->MedianMs([&] {
      CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice));
    });
    CHECK_CUDA(cudaFree(src));
    CHECK_CUDA(cudaFree(dst));
    rows->push_back({std::string(p.name) + (backward ? " bwd" : " fwd"), S::name,
                     ShapeName(dims), ms, copy_ms, bytes});
  }
}

int PrintTable(const std::vector<Row>& rows, int warmup, int reps) {
  std::printf("\nTiming: median of %d runs after %d warm-up runs, L2 flushed before each; "
              "copy = cudaMemcpy device-to-device of half the kernel's bytes (the same bytes "
              "read + written); GB/s = bytes read + written / kernel time; of copy = copy ms / "
              "kernel ms. fwd/bwd of a composition = all its launches (pools and sums).\n",
              reps, warmup);
  std::printf("%-15s %-8s %-16s %10s %10s %9s %8s\n", "kernel", "dtype", "shape", "kernel ms",
              "copy ms", "GB/s", "of copy");
  int slow = 0;
  for (const Row& r : rows) {
    const bool flag = r.kernel_ms > 3 * r.copy_ms;
    slow += flag;
    std::printf("%-15s %-8s %-16s %10.4f %10.4f %9.0f %8.2f%s\n", r.kernel.c_str(),
                r.dtype.c_str(), r.shape.c_str(), r.kernel_ms, r.copy_ms,
                r.bytes / (r.kernel_ms * 1e-3) / 1e9, r.copy_ms / r.kernel_ms,
                flag ? "  SLOW: > 3x the copy" : "");
  }
  std::printf("%d of %zu timings slower than 3x the copy\n", slow, rows.size());
  return slow;
}

// ---------------------------------------------------------------- main

int main(int argc, char** argv) {
  bool quick = false, timing = true, dry = false;
  double budget = 0;  // seconds; 0: none
  int threads = static_cast<int>(std::min(16u, std::max(1u, std::thread::hardware_concurrency())));
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
      timing = false;
    } else if (!std::strcmp(argv[i], "--dry-run")) {
      dry = true;
    } else if (!std::strcmp(argv[i], "--no-timing")) {
      timing = false;
    } else if (!std::strcmp(argv[i], "--budget") && i + 1 < argc) {
      budget = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else {
      std::printf("usage: %s [--quick] [--no-timing] [--dry-run] [--threads N] [--budget S]\n", argv[0]);
      return 2;
    }
  }
  NumThreads() = threads;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device\nSUMMARY: FAIL (no CUDA device)\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int runtime = 0, driver = 0;
  CHECK_CUDA(cudaRuntimeGetVersion(&runtime));
  CHECK_CUDA(cudaDriverGetVersion(&driver));
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB), runtime %d, driver %d; launch grid cap "
              "%d blocks of %d; %d host threads%s\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              prop.totalGlobalMem / 1073741824.0, runtime, driver, kernels::DeviceMaxBlocks(),
              kernels::kThreadsPerBlock, threads, quick ? "; quick mode" : "");

  const bool conversions_ok = CheckConversions(quick || dry);
  bool ok = conversions_ok;
  Tally tally;
  // Odd sizes, size-1 axes (width 1, height 1), channels not a multiple of
  // 32 (or below 32).
  const Dims small[] = {{2, 7, 5, 3},  {1, 1, 6, 2},  {1, 9, 1, 1},  {1, 8, 16, 2},
                        {3, 33, 17, 65}, {1, 1, 1, 1}, {2, 5, 1, 33}, {2, 1, 7, 33},
                        {1, 3, 3, 31}};
  for (const Dims& d : small) {
    for (Values v : {Values::kTies, Values::kNormal, Values::kNaN}) {
      ok &= CheckReferenceAgainstBruteForce(d, v, 7, &tally);
    }
  }
  std::printf("%-4s fast CPU reference against the brute force (%.0f s)\n", ok ? "ok" : "FAIL",
              elapsed());
  const uint64_t seed = 1;
  for (const Dims& d : small) {
    for (int grid : {0, 2}) {
      ok &= CheckConfig<F32, CudaOps>({d, Values::kTies, Grads::kExact, grid}, seed, &tally);
      ok &= CheckConfig<F16, CudaOps>({d, Values::kTies, Grads::kExact, grid}, seed, &tally);
      if (quick) continue;
      ok &= CheckConfig<F32, CudaOps>({d, Values::kNormal, Grads::kExact, grid}, seed, &tally);
      ok &= CheckConfig<F16, CudaOps>({d, Values::kNormal, Grads::kExact, grid}, seed, &tally);
      for (Values v : {Values::kTies, Values::kNormal}) {
        ok &= CheckConfig<F64, CudaOps>({d, v, Grads::kExact, grid}, seed, &tally);
        ok &= CheckConfig<BF16, CudaOps>({d, v, Grads::kExact, grid}, seed, &tally);
      }
    }
    ok &= CheckConfig<F32, CudaOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
    if (quick) continue;
    ok &= CheckConfig<F32, CudaOps>({d, Values::kTies, Grads::kGauss, 0}, seed, &tally);
    ok &= CheckConfig<F64, CudaOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
    ok &= CheckConfig<F16, CudaOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
    ok &= CheckConfig<BF16, CudaOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
  }
  std::printf("(small shapes done, %.0f s)\n", elapsed());
  std::fflush(stdout);

  // The releases' shapes: batch 2-8, 128x128 maps, 128 or 256 channels.
  const Dims release[] = {{2, 128, 128, 128}, {4, 128, 128, 256}, {8, 128, 128, 128}};
  const Dims tiny[] = {{2, 16, 16, 8}, {1, 16, 8, 24}, {3, 8, 16, 8}};
  const Dims* large = dry ? tiny : release;

  // Timing before the release-shape comparisons, so that a run cut short
  // by the time budget still has its table.
  int slow = 0;
  size_t timed = 0;
  if (timing) {
    Timer timer(dry);
    std::vector<Row> rows;
    for (int li = 0; li < 3; ++li) {
      for (const Program& p : kPrograms) TimeProgram<F32>(large[li], p, &timer, &rows);
    }
    for (int pi = 0; pi < 4; ++pi) {
      TimeProgram<F16>(large[1], kPrograms[pi], &timer, &rows);
      TimeProgram<BF16>(large[1], kPrograms[pi], &timer, &rows);
    }
    slow = PrintTable(rows, timer.warmup, timer.reps);
    timed = rows.size();
    std::printf("(timing done, %.0f s)\n\n", elapsed());
    std::fflush(stdout);
  }

  // Each release-shape configuration starts only within the budget.
  int skipped = 0;
  auto check = [&](auto run) {
    if (budget > 0 && elapsed() > budget) {
      ++skipped;
      return;
    }
    ok &= run();
  };
  if (!quick) {
    for (int li = 0; li < 3; ++li) {
      const Dims d = large[li];
      check([&] { return CheckConfig<F32, CudaOps>({d, Values::kTies, Grads::kExact, 0}, seed, &tally); });
      check([&] { return CheckConfig<F32, CudaOps>({d, Values::kNormal, Grads::kExact, 0}, seed, &tally); });
      check([&] { return CheckConfig<F32, CudaOps>({d, Values::kNormal, Grads::kGauss, 0}, seed, &tally); });
      check([&] { return CheckConfig<F16, CudaOps>({d, Values::kTies, Grads::kExact, 0}, seed, &tally); });
      check([&] { return CheckConfig<BF16, CudaOps>({d, Values::kNormal, Grads::kExact, 0}, seed, &tally); });
    }
    // A width that is no power of two; a 16-bit type on a 2-block grid.
    const Dims wide = dry ? Dims{1, 4, 30, 9} : Dims{2, 64, 300, 96};
    check([&] { return CheckConfig<F32, CudaOps>({wide, Values::kTies, Grads::kExact, 0}, seed, &tally); });
    check([&] { return CheckConfig<F16, CudaOps>({wide, Values::kNormal, Grads::kExact, 2}, seed, &tally); });
    // A grid smaller than the lines (128 blocks needed): the stride loop at size.
    check([&] { return CheckConfig<F32, CudaOps>({large[0], Values::kTies, Grads::kExact, 100}, seed, &tally); });
    check([&] { return CheckConfig<F64, CudaOps>({large[0], Values::kTies, Grads::kExact, 0}, seed, &tally); });
    std::printf("(release shapes done, %.0f s%s)\n", elapsed(),
                skipped ? ", some skipped: over the time budget" : "");
  }

  const bool pass = ok && tally.failures == 0;
  const char* verdict = !pass ? "FAIL" : skipped ? "INCOMPLETE" : "PASS";
  std::printf("\nSUMMARY: %s: %" PRId64 " comparisons in %" PRId64 " configurations, %" PRId64
              " mismatching (%" PRId64 " configurations failed)",
              verdict, tally.comparisons, tally.configs, tally.failures, tally.failed_configs);
  if (skipped) std::printf(", %d configurations skipped (--budget %g s)", skipped, budget);
  std::printf("; conversions %s", conversions_ok ? "equal" : "DIFFER");
  if (timing) std::printf("; %d of %zu timings slower than 3x the copy", slow, timed);
  std::printf("; %.0f s\n", elapsed());
  return !pass ? 1 : skipped ? 4 : 0;
}
