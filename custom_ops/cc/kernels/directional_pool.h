// Directional (corner) pooling: the functors behind the ops of
// cc/ops/directional_pool_ops.cc. docs/reference.md §2.
//
// A tensor is seen as (outer, n, inner) with n the scanned axis, so one
// kernel serves the four directions: on NHWC, top/bottom pooling scan axis 1
// (outer = batch, inner = width * channels) and left/right pooling axis 2
// (outer = batch * height, inner = channels). `inner` is contiguous in
// memory: the CPU kernel vectorises over it, the CUDA kernel gives
// neighbouring threads neighbouring `inner` positions (coalesced).
//
// Forward, scanning t = 0 .. n-1 from the scan start (index 0, or n-1 when
// `reverse`):   y[t] = x[t] if x[t] > y[t-1] or x[t] is NaN, else y[t-1].
// The running maximum is replaced only on a strict increase, so the argmax
// of y[t] is the tied position nearest the scan start (the releases' rule,
// and what the pure-TF scan of tf_centernet/ops/pooling.py computes).
//
// Backward without an argmax tensor: position t is the argmax of some
// outputs iff it is a "record", y[t] != y[t-1] (t > 0; the scan start is
// always one). y is non-decreasing along the scan, so y[t] != y[t-1] iff
// x[t] > y[t-1]: exactly the forward's replacement rule, ties included. A
// record owns the outputs from itself up to the next record, so walking the
// scan backwards with a running sum s of the incoming gradient g:
//     s += g[t];  dx[t] = record(t) ? s : 0;  if record(t): s = 0.
// NaN: once y is NaN it stays NaN; record(t) also requires y[t-1] not NaN,
// so the gradient goes to the first NaN. The backward reads y and g and
// writes dx (three passes over memory, like the forward's two), and x need
// not be kept for it. Storing an argmax (int32) instead would add a write
// to the forward and read 4 bytes per element instead of y in the backward.
//
// This header includes nothing from TensorFlow: the standalone CUDA check
// (custom_ops/cuda_check/) uses it without TensorFlow.

#ifndef TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_H_
#define TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_H_

#include <cstdint>

namespace Eigen {
struct ThreadPoolDevice;
struct GpuDevice;
}  // namespace Eigen

namespace tensorflow {
namespace tf_centernet {

// The scanned tensor as (outer, n, inner), row-major.
struct ScanShape {
  int64_t outer;
  int64_t n;
  int64_t inner;
  bool reverse;  // true: the scan starts at index n - 1: y[i] = max(x[i:]).
};

// Functors return nullptr on success, else a static error message.
// Maxima are compared and gradients summed in Acc<T>: double for double
// inputs, float otherwise (half and bfloat16 widen to float). Shared by the
// CPU and CUDA kernels.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using Acc = typename AccType<T>::type;

template <typename Device, typename T>
struct DirectionalPoolFunctor;

template <typename Device, typename T>
struct DirectionalPoolGradFunctor;

template <typename T>
struct DirectionalPoolFunctor<Eigen::ThreadPoolDevice, T> {
  const char* operator()(const Eigen::ThreadPoolDevice& d, const ScanShape& s,
                         const T* input, T* output) const;
};

template <typename T>
struct DirectionalPoolGradFunctor<Eigen::ThreadPoolDevice, T> {
  const char* operator()(const Eigen::ThreadPoolDevice& d, const ScanShape& s,
                         const T* output, const T* grad, T* backprop) const;
};

#if GOOGLE_CUDA
template <typename T>
struct DirectionalPoolFunctor<Eigen::GpuDevice, T> {
  const char* operator()(const Eigen::GpuDevice& d, const ScanShape& s,
                         const T* input, T* output) const;
};

template <typename T>
struct DirectionalPoolGradFunctor<Eigen::GpuDevice, T> {
  const char* operator()(const Eigen::GpuDevice& d, const ScanShape& s,
                         const T* output, const T* grad, T* backprop) const;
};
#endif  // GOOGLE_CUDA

}  // namespace tf_centernet
}  // namespace tensorflow

#endif  // TF_CENTERNET_CUSTOM_OPS_DIRECTIONAL_POOL_H_
