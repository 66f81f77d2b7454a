// Runs the CUDA kernels of directional_pool_cuda.cuh on the CPU, one
// emulated thread at a time, against the brute-force reference: a check of
// their indexing and tie/NaN logic on machines without a GPU. It says
// nothing about the compiled device code; check_directional_pool.cu does.
//
//   g++ -std=c++17 -O2 -o /tmp/emulate custom_ops/cuda_check/emulate_on_host.cc && /tmp/emulate

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

// Just enough of CUDA's vocabulary for the kernels to compile as C++.
#define __global__
#define __restrict__
struct Dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
static Dim3 blockIdx, threadIdx, blockDim, gridDim;

#include "../cc/kernels/directional_pool_cuda.cuh"
#include "reference.h"

namespace kernels = tensorflow::tf_centernet::cuda;

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

int main() {
  const int shapes[][4] = {{2, 7, 5, 3}, {1, 1, 6, 2}, {1, 9, 1, 1}, {1, 8, 16, 2}, {3, 33, 17, 65}};
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> small(-2, 1);
  std::normal_distribution<float> normal(-3.0f, 1.0f);
  int failures = 0;
  for (const auto& dims : shapes) {
    const int64_t size = int64_t{dims[0]} * dims[1] * dims[2] * dims[3];
    for (const Direction& d : kDirections) {
      for (bool ties : {false, true}) {
        std::vector<float> x(size), g(size), y(size), dx(size);
        for (int64_t e = 0; e < size; ++e) {
          x[e] = ties ? static_cast<float>(small(rng)) : normal(rng);
          g[e] = normal(rng) + 3.0f;
        }
        if (!ties && size > 3) x[size / 2] = NAN;  // NaN propagates
        std::vector<float> y_ref;
        std::vector<double> dx_ref;
        Reference(dims, d, x, g, &y_ref, &dx_ref);
        const ScanShape s = MakeShape(dims, d);
        // A small grid (3 blocks of 32) so the strided loop is exercised.
        Launch(3, 32, [&] { kernels::DirectionalPoolForwardKernel<float>(s, x.data(), y.data()); });
        Launch(3, 32, [&] { kernels::DirectionalPoolBackwardKernel<float>(s, y.data(), g.data(), dx.data()); });
        int64_t bad = 0;
        for (int64_t e = 0; e < size; ++e) {
          const bool same_y = y[e] == y_ref[e] || (std::isnan(y[e]) && std::isnan(y_ref[e]));
          if (!same_y || std::fabs(dx[e] - dx_ref[e]) > 1e-4 * (1 + std::fabs(dx_ref[e]))) ++bad;
        }
        std::printf("%-4s %-6s (%d,%d,%d,%d)%s\n", bad ? "FAIL" : "ok", d.name, dims[0], dims[1],
                    dims[2], dims[3], ties ? " ties" : " nan");
        failures += bad != 0;
      }
    }
  }
  std::printf("%s\n", failures ? "SOME CHECKS FAILED" : "ALL OK");
  return failures ? 1 : 0;
}
