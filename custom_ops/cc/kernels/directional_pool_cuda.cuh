// CUDA kernels of the directional pooling ops, free of TensorFlow so that
// custom_ops/cuda_check/ can test them with nvcc alone. The algorithm (and
// why the backward needs only the forward output) is in directional_pool.h.
//
// One thread per line (outer, inner position): it scans the n positions of
// its line sequentially. Neighbouring threads take neighbouring `inner`
// positions, so every step of a warp reads and writes contiguous memory.
// T is float, double, or a 16-bit float type (Eigen::half / __half,
// Eigen::bfloat16 / __nv_bfloat16); maxima are compared and gradients summed
// in Acc<T>: double for double, float otherwise.

#ifndef TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_CUDA_CUH_
#define TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_CUDA_CUH_

#ifdef __CUDACC__
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "directional_pool.h"

namespace tensorflow {
namespace tf_centernet {
namespace cuda {

constexpr int kThreadsPerBlock = 256;


template <typename T>
__global__ void DirectionalPoolForwardKernel(ScanShape s,
                                             const T* __restrict__ x,
                                             T* __restrict__ y) {
  const int64_t lines = s.outer * s.inner;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t step = s.reverse ? -s.inner : s.inner;  // along the scan
  for (int64_t line = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       line < lines; line += stride) {
    const int64_t o = line / s.inner;
    const int64_t k = line - o * s.inner;
    int64_t offset = (o * s.n + (s.reverse ? s.n - 1 : 0)) * s.inner + k;
    T best = x[offset];
    Acc<T> best_f = static_cast<Acc<T>>(best);
    y[offset] = best;
    for (int64_t t = 1; t < s.n; ++t) {
      offset += step;
      const T v = x[offset];
      const Acc<T> v_f = static_cast<Acc<T>>(v);
      // Strict increase (ties keep the earlier position); NaN propagates.
      if (v_f > best_f || v_f != v_f) {
        best = v;
        best_f = v_f;
      }
      y[offset] = best;
    }
  }
}

template <typename T>
__global__ void DirectionalPoolBackwardKernel(ScanShape s,
                                              const T* __restrict__ y,
                                              const T* __restrict__ g,
                                              T* __restrict__ dx) {
  const int64_t lines = s.outer * s.inner;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t step = s.reverse ? s.inner : -s.inner;  // toward the start
  for (int64_t line = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       line < lines; line += stride) {
    const int64_t o = line / s.inner;
    const int64_t k = line - o * s.inner;
    // Start at the last position scanned and walk back to the scan start.
    int64_t offset = (o * s.n + (s.reverse ? 0 : s.n - 1)) * s.inner + k;
    Acc<T> sum = 0;
    Acc<T> current = static_cast<Acc<T>>(y[offset]);
    for (int64_t t = s.n - 1; t >= 1; --t) {
      const Acc<T> previous = static_cast<Acc<T>>(y[offset + step]);
      sum += static_cast<Acc<T>>(g[offset]);
      const bool record = current != previous && previous == previous;
      dx[offset] = static_cast<T>(record ? sum : Acc<T>(0));
      if (record) sum = 0;
      current = previous;
      offset += step;
    }
    dx[offset] = static_cast<T>(sum + static_cast<Acc<T>>(g[offset]));
  }
}

#ifdef __CUDACC__  // the launchers; cuda_check/emulate_on_host.cc runs the
                    // kernels above on the CPU without them.

// Grid size: enough blocks for every line, at most `max_blocks` (a grid
// that fills the device; the kernels stride over the rest).
inline unsigned int GridSize(const ScanShape& s, int max_blocks) {
  const int64_t lines = s.outer * s.inner;
  int64_t blocks = (lines + kThreadsPerBlock - 1) / kThreadsPerBlock;
  if (max_blocks > 0 && blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

inline bool IsEmpty(const ScanShape& s) {
  return s.outer == 0 || s.n == 0 || s.inner == 0;
}

// Launchers: nullptr on success, else the CUDA error string.
template <typename T>
const char* LaunchForward(const ScanShape& s, const T* x, T* y,
                          int max_blocks, cudaStream_t stream) {
  if (IsEmpty(s)) return nullptr;
  DirectionalPoolForwardKernel<T>
      <<<GridSize(s, max_blocks), kThreadsPerBlock, 0, stream>>>(s, x, y);
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

template <typename T>
const char* LaunchBackward(const ScanShape& s, const T* y, const T* g, T* dx,
                           int max_blocks, cudaStream_t stream) {
  if (IsEmpty(s)) return nullptr;
  DirectionalPoolBackwardKernel<T>
      <<<GridSize(s, max_blocks), kThreadsPerBlock, 0, stream>>>(s, y, g, dx);
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

// A grid that fills the current device, for callers without TensorFlow.
inline int DeviceMaxBlocks() {
  int device = 0, sms = 0, threads_per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device) != cudaSuccess) {
    return 0;  // no cap
  }
  return sms * (threads_per_sm / kThreadsPerBlock);
}

#endif  // __CUDACC__

}  // namespace cuda
}  // namespace tf_centernet
}  // namespace tensorflow

#endif  // TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_CUDA_CUH_
