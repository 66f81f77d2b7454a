// Standalone check of the CUDA directional-pooling kernels: no TensorFlow,
// no Python. Drives directional_pool_cuda.cuh (the very code the op
// library compiles) on a GPU and compares forward and backward with a
// brute-force CPU reference, for the four directions on NHWC tensors, in
// float32, float16 and bfloat16; then times the float32 kernels.
//
//   nvcc -std=c++17 -O3 -o /tmp/check_directional_pool \
//       custom_ops/cuda_check/check_directional_pool.cu && /tmp/check_directional_pool
//
// (or custom_ops/cuda_check/run.sh). Exit status 0 when everything matches.
// Not part of CI: it needs a GPU.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../cc/kernels/directional_pool_cuda.cuh"
#include "reference.h"

namespace kernels = tensorflow::tf_centernet::cuda;

#define CHECK_CUDA(expr)                                                   \
  do {                                                                     \
    cudaError_t err_ = (expr);                                             \
    if (err_ != cudaSuccess) {                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr,    \
                   cudaGetErrorString(err_));                              \
      std::exit(2);                                                        \
    }                                                                      \
  } while (0)

template <typename T>
struct Type;
template <>
struct Type<float> {
  static constexpr const char* name = "float32";
  static constexpr double tol = 1e-5;
};
template <>
struct Type<__half> {
  static constexpr const char* name = "float16";
  static constexpr double tol = 2e-2;
};
template <>
struct Type<__nv_bfloat16> {
  static constexpr const char* name = "bfloat16";
  static constexpr double tol = 1e-1;
};

template <typename T>
bool CheckOne(const int dims[4], const Direction& d, std::mt19937* rng, bool ties) {
  const int64_t size = int64_t{dims[0]} * dims[1] * dims[2] * dims[3];
  std::vector<T> xt(size), gt(size);
  std::vector<float> x(size), g(size);
  std::uniform_int_distribution<int> small(-2, 1);
  std::normal_distribution<float> normal(-3.0f, 1.0f);  // mostly negative
  for (int64_t e = 0; e < size; ++e) {
    xt[e] = static_cast<T>(ties ? static_cast<float>(small(*rng)) : normal(*rng));
    gt[e] = static_cast<T>(normal(*rng) + 3.0f);
    x[e] = static_cast<float>(xt[e]);  // the rounded values
    g[e] = static_cast<float>(gt[e]);
  }
  std::vector<float> y_ref;
  std::vector<double> dx_ref;
  Reference(dims, d, x, g, &y_ref, &dx_ref);

  T *dx_in, *dy, *dg, *ddx;
  const size_t bytes = std::max<int64_t>(size, 1) * sizeof(T);
  CHECK_CUDA(cudaMalloc(&dx_in, bytes));
  CHECK_CUDA(cudaMalloc(&dy, bytes));
  CHECK_CUDA(cudaMalloc(&dg, bytes));
  CHECK_CUDA(cudaMalloc(&ddx, bytes));
  CHECK_CUDA(cudaMemcpy(dx_in, xt.data(), size * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dg, gt.data(), size * sizeof(T), cudaMemcpyHostToDevice));
  const ScanShape s = MakeShape(dims, d);
  const int max_blocks = kernels::DeviceMaxBlocks();
  const char* error = kernels::LaunchForward<T>(s, dx_in, dy, max_blocks, 0);
  if (!error) error = kernels::LaunchBackward<T>(s, dy, dg, ddx, max_blocks, 0);
  if (error) {
    std::printf("launch failed: %s\n", error);
    return false;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<T> y(size), dx(size);
  CHECK_CUDA(cudaMemcpy(y.data(), dy, size * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(dx.data(), ddx, size * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(dx_in));
  CHECK_CUDA(cudaFree(dy));
  CHECK_CUDA(cudaFree(dg));
  CHECK_CUDA(cudaFree(ddx));

  int64_t bad_y = 0, bad_dx = 0;
  double worst = 0.0;
  for (int64_t e = 0; e < size; ++e) {
    if (static_cast<float>(y[e]) != y_ref[e]) ++bad_y;
    // The reference sums in double; the kernel in float, then rounds to T.
    const double err = std::fabs(static_cast<double>(static_cast<float>(dx[e])) - dx_ref[e]);
    worst = std::max(worst, err);
    if (err > Type<T>::tol * (1.0 + std::fabs(dx_ref[e]))) ++bad_dx;
  }
  const bool ok = bad_y == 0 && bad_dx == 0;
  std::printf("%-4s %-8s %-6s (%d,%d,%d,%d) %-5s forward %s, backward %s (max |err| %.2g)\n",
              ok ? "ok" : "FAIL", Type<T>::name, d.name, dims[0], dims[1], dims[2], dims[3],
              ties ? "ties" : "", bad_y ? "MISMATCH" : "exact", bad_dx ? "MISMATCH" : "ok", worst);
  return ok;
}

float TimeMs(const ScanShape& s, const float* a, const float* b, float* c, bool backward) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  const int max_blocks = kernels::DeviceMaxBlocks();
  std::vector<float> times;
  for (int rep = 0; rep < 21; ++rep) {
    CHECK_CUDA(cudaEventRecord(start));
    if (backward) {
      kernels::LaunchBackward<float>(s, a, b, c, max_blocks, 0);
    } else {
      kernels::LaunchForward<float>(s, a, c, max_blocks, 0);
    }
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void Benchmark() {
  const int dims[4] = {4, 128, 128, 128};
  const int64_t size = int64_t{4} * 128 * 128 * 128;
  float *a, *b, *c;
  CHECK_CUDA(cudaMalloc(&a, size * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&b, size * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c, size * sizeof(float)));
  CHECK_CUDA(cudaMemset(a, 0, size * sizeof(float)));
  CHECK_CUDA(cudaMemset(b, 0, size * sizeof(float)));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> copies;
  for (int rep = 0; rep < 21; ++rep) {
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(cudaMemcpy(c, a, size * sizeof(float), cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    copies.push_back(ms);
  }
  std::sort(copies.begin(), copies.end());
  std::printf("\nfloat32 (4,128,128,128), median of 21: copy %.3f ms\n", copies[10]);
  for (const Direction& d : kDirections) {
    const ScanShape s = MakeShape(dims, d);
    std::printf("  %-6s forward %.3f ms, backward %.3f ms\n", d.name, TimeMs(s, a, a, c, false),
                TimeMs(s, a, b, c, true));
  }
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(c));
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  // Odd sizes, size-1 axes, more lines than one grid (strided loop).
  const int shapes[][4] = {{2, 7, 5, 3}, {1, 1, 6, 2}, {1, 9, 1, 1}, {1, 8, 16, 2},
                           {3, 33, 17, 65}, {1, 1, 1, 1}, {2, 64, 300, 96}};
  std::mt19937 rng(0);
  bool ok = true;
  for (const auto& dims : shapes) {
    for (const Direction& d : kDirections) {
      for (bool ties : {false, true}) {
        ok &= CheckOne<float>(dims, d, &rng, ties);
        ok &= CheckOne<__half>(dims, d, &rng, ties);
        ok &= CheckOne<__nv_bfloat16>(dims, d, &rng, ties);
      }
    }
  }
  Benchmark();
  std::printf("%s\n", ok ? "ALL OK" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
