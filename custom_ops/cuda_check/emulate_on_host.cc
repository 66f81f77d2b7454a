// Runs the CUDA kernels of directional_pool_cuda.cuh on the CPU, one
// emulated thread at a time, through the checks of harness.h (the four
// directions and the corner, cascade and center compositions, float32,
// float64, float16 and bfloat16, ties, extremes, NaN, full and 2-block
// grids) against the CPU reference: their indexing, tie and NaN logic, and
// the harness itself, on machines without a GPU. It says nothing about the
// compiled device code; check_directional_pool.cu does.
//
//   g++ -std=c++17 -O2 -o /tmp/emulate custom_ops/cuda_check/emulate_on_host.cc && /tmp/emulate
//
// Prints one line per configuration and ALL OK (exit 0) when everything
// matches. --large adds one release-sized shape (slow).

#include <cstdio>
#include <cstring>
#include <vector>

// Just enough of CUDA's vocabulary for the kernels to compile as C++.
#define __global__
#define __restrict__ __restrict
struct Dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
static Dim3 blockIdx, threadIdx, blockDim, gridDim;

#define CUDA_CHECK_NO_THREADS  // one core: no std::thread, no -pthread
#include "../cc/kernels/directional_pool_cuda.cuh"
#include "harness.h"

namespace kernels = tensorflow::tf_centernet::cuda;

// The 16-bit device types: bits, converted through float like __half and
// __nv_bfloat16 (the kernels only convert, never compute, in them).
struct EmuHalf {
  uint16_t bits;
  EmuHalf() = default;
  explicit EmuHalf(float f) : bits(FloatToHalfBits(f)) {}
  explicit operator float() const { return HalfBitsToFloat(bits); }
};
struct EmuBf16 {
  uint16_t bits;
  EmuBf16() = default;
  explicit EmuBf16(float f) : bits(FloatToBf16Bits(f)) {}
  explicit operator float() const { return Bf16BitsToFloat(bits); }
};
template <typename S>
struct EmuType;
template <>
struct EmuType<F32> {
  using T = float;
};
template <>
struct EmuType<F64> {
  using T = double;
};
template <>
struct EmuType<F16> {
  using T = EmuHalf;
};
template <>
struct EmuType<BF16> {
  using T = EmuBf16;
};

// Every thread of a (blocks x threads) grid, sequentially.
template <typename Kernel>
void Launch(unsigned int blocks, unsigned int threads, Kernel kernel) {
  gridDim.x = blocks;
  blockDim.x = threads;
  for (unsigned int b = 0; b < blocks; ++b) {
    for (unsigned int t = 0; t < threads; ++t) {
      blockIdx.x = b;
      threadIdx.x = t;
      kernel();
    }
  }
}

// The launchers' grid: enough 256-thread blocks for every line (work
// item), at most `grid` blocks when grid > 0.
inline unsigned int Blocks(int64_t items, int grid) {
  int64_t blocks = (items + kernels::kThreadsPerBlock - 1) / kernels::kThreadsPerBlock;
  if (grid > 0 && blocks > grid) blocks = grid;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

template <typename S>
struct EmuOps {
  using T = typename EmuType<S>::T;
  using Bits = typename S::Bits;
  using Tensor = std::vector<T>*;
  static_assert(sizeof(T) == sizeof(Bits), "storage");
  int64_t n;
  int grid;
  std::deque<std::vector<T>> store;
  EmuOps(int64_t n_, int grid_) : n(n_), grid(grid_) {}
  Tensor New() {
    store.emplace_back(n);
    return &store.back();
  }
  void Upload(Tensor t, const std::vector<Bits>& v) { std::memcpy(t->data(), v.data(), n * sizeof(T)); }
  void Download(Tensor t, std::vector<Bits>* v) {
    v->resize(n);
    std::memcpy(v->data(), t->data(), n * sizeof(T));
  }
  void Pool(const ScanShape& s, Tensor x, Tensor y) {
    Launch(Blocks(s.outer * s.inner, grid), kernels::kThreadsPerBlock,
           [&] { kernels::DirectionalPoolForwardKernel<T>(s, x->data(), y->data()); });
  }
  void PoolGrad(const ScanShape& s, Tensor, Tensor y, Tensor g, Tensor dx) {
    Launch(Blocks(s.outer * s.inner, grid), kernels::kThreadsPerBlock,
           [&] { kernels::DirectionalPoolBackwardKernel<T>(s, y->data(), g->data(), dx->data()); });
  }
  void Add(int64_t count, Tensor a, Tensor b, Tensor c) {
    Launch(Blocks(count, grid), kernels::kThreadsPerBlock,
           [&] { AddKernel<T>(count, a->data(), b->data(), c->data()); });
  }
  const char* Finish() { return nullptr; }
};

// Round trips of every 16-bit pattern, and float -> 16 bits against the
// nearest-value definition on a sample: the conversions the reference and
// the emulated types rely on (the device check compares them with the GPU's).
int CheckConversions() {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfBitsToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(f) && FloatToHalfBits(f) != h) ++bad;
    const float b = Bf16BitsToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(b) && FloatToBf16Bits(b) != h) ++bad;
  }
  // Nearest, ties to even: no representable value is nearer, and on a tie
  // the chosen one is even (or it overflowed to inf past the largest value).
  auto nearest = [](float f, uint16_t got, float (*to_float)(uint16_t)) {
    const double x = f, v = to_float(got);
    if (std::isinf(v) && !std::isinf(x)) return true;  // covered by the round trips' edges
    for (int delta : {-1, 1}) {
      const uint16_t other = static_cast<uint16_t>(got + delta);
      const double w = to_float(other);
      if (std::isnan(w) || ((other ^ got) & 0x8000u)) continue;
      if (std::fabs(w - x) < std::fabs(v - x)) return false;
      if (std::fabs(w - x) == std::fabs(v - x) && (got & 1u)) return false;
    }
    return true;
  };
  for (uint64_t i = 0; i < 2000000; ++i) {
    const float f = BitsFloat(static_cast<uint32_t>(Mix(i)));
    if (std::isnan(f)) continue;
    if (!nearest(f, FloatToHalfBits(f), HalfBitsToFloat)) ++bad;
    if (!nearest(f, FloatToBf16Bits(f), Bf16BitsToFloat)) ++bad;
  }
  // The edges: half's largest finite, its overflow threshold, subnormals.
  const struct {
    float f;
    uint16_t half;
  } edges[] = {{65504.0f, 0x7bff}, {65519.99f, 0x7bff}, {65520.0f, 0x7c00},
               {5.9604645e-8f, 0x0001}, {2.9802322e-8f, 0x0000}, {2.9802326e-8f, 0x0001},
               {-0.0f, 0x8000}, {6.1035156e-5f, 0x0400}};
  for (const auto& e : edges) bad += FloatToHalfBits(e.f) != e.half;
  std::printf("%-4s float <-> float16/bfloat16 conversions (%d mismatches)\n", bad ? "FAIL" : "ok", bad);
  return bad;
}

int main(int argc, char** argv) {
  const bool large = argc > 1 && std::strcmp(argv[1], "--large") == 0;
  Tally tally;
  int failures = CheckConversions();
  const Dims shapes[] = {{2, 7, 5, 3},  {1, 1, 6, 2},  {1, 9, 1, 1},  {1, 8, 16, 2}, {3, 33, 17, 41},
                         {1, 1, 1, 1},  {2, 5, 1, 33}, {2, 1, 7, 33}, {1, 3, 3, 31}};
  for (const Dims& d : shapes) {
    for (Values v : {Values::kTies, Values::kNormal, Values::kNaN}) {
      failures += !CheckReferenceAgainstBruteForce(d, v, 7, &tally);
    }
  }
  std::printf("%-4s fast reference against the brute force\n", tally.failures ? "FAIL" : "ok");
  const uint64_t seed = 1;
  for (const Dims& d : shapes) {
    for (int grid : {0, 2}) {
      for (Values v : {Values::kTies, Values::kNormal}) {
        CheckConfig<F32, EmuOps>({d, v, Grads::kExact, grid}, seed, &tally);
        CheckConfig<F64, EmuOps>({d, v, Grads::kExact, grid}, seed, &tally);
        CheckConfig<F16, EmuOps>({d, v, Grads::kExact, grid}, seed, &tally);
        CheckConfig<BF16, EmuOps>({d, v, Grads::kExact, grid}, seed, &tally);
      }
    }
    CheckConfig<F32, EmuOps>({d, Values::kTies, Grads::kGauss, 0}, seed, &tally);
    CheckConfig<F32, EmuOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
    CheckConfig<F16, EmuOps>({d, Values::kNaN, Grads::kExact, 0}, seed, &tally);
  }
  if (large) {
    CheckConfig<F32, EmuOps>({{2, 128, 128, 128}, Values::kTies, Grads::kExact, 0}, seed, &tally);
    CheckConfig<F32, EmuOps>({{2, 128, 128, 128}, Values::kNormal, Grads::kGauss, 0}, seed, &tally);
  }
  failures += static_cast<int>(tally.failures);
  std::printf("%" PRId64 " comparisons in %" PRId64 " configurations, %" PRId64 " failed\n",
              tally.comparisons, tally.configs, tally.failed_configs);
  std::printf("%s\n", failures ? "SOME CHECKS FAILED" : "ALL OK");
  return failures ? 1 : 0;
}
