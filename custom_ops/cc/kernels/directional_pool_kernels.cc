// CPU kernels of the directional pooling ops, and the op kernels of both
// devices. The algorithm is described in directional_pool.h.

#define EIGEN_USE_THREADS

#include "directional_pool.h"

#include <algorithm>
#include <cstdint>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tf_centernet {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

namespace {

// A CPU work unit scans all n rows of a block of `inner` columns. Blocks of
// up to kMaxBlock elements (16 KiB of float) keep the previous row and the
// backward's running sums in L1/L2 while rows stream through; they shrink
// (not below kMinBlock) until there are a few units per thread.
constexpr int64_t kMaxBlock = 4096;
constexpr int64_t kMinBlock = 256;
constexpr int64_t kCacheLine = 64;
// Short rows are fetched this many bytes ahead of the scan (software
// prefetch): the hardware prefetchers do not follow the short forward runs
// of rows visited in descending address order (left pooling, right
// pooling's backward: 5x slower without). Rows of kPrefetchBelow bytes or
// more stream well without it.
constexpr int64_t kPrefetchBytes = 8192;
constexpr int64_t kPrefetchBelow = 4096;

template <typename T>
inline Acc<T> ToAcc(T v) {
  return static_cast<Acc<T>>(v);
}

// Rows ahead to prefetch for blocks of `len` elements (0: none).
template <typename T>
inline int64_t PrefetchRows(int64_t len) {
  const int64_t bytes = len * static_cast<int64_t>(sizeof(T));
  return bytes >= kPrefetchBelow ? 0 : kPrefetchBytes / bytes;
}

template <typename T>
inline void Prefetch(const T* row, int64_t len, int rw) {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = len * static_cast<int64_t>(sizeof(T));
  for (int64_t b = 0; b < bytes; b += kCacheLine) {
    if (rw) {
      __builtin_prefetch(p + b, 1);
    } else {
      __builtin_prefetch(p + b, 0);
    }
  }
}

// One unit of the forward: `len` columns starting at x / y (row 0).
template <typename T>
void ForwardUnit(const ScanShape& s, const T* x, T* y, int64_t len) {
  const int64_t start = s.reverse ? s.n - 1 : 0;
  const int64_t step = s.reverse ? -s.inner : s.inner;  // along the scan
  const int64_t ahead = PrefetchRows<T>(len);
  const T* xr = x + start * s.inner;
  T* yr = y + start * s.inner;
  std::copy(xr, xr + len, yr);
  for (int64_t t = 1; t < s.n; ++t) {
    const T* prev = yr;
    xr += step;
    yr += step;
    if (ahead > 0 && t + ahead < s.n) {
      Prefetch(xr + ahead * step, len, 0);
      Prefetch(yr + ahead * step, len, 1);
    }
    for (int64_t k = 0; k < len; ++k) {
      const Acc<T> v = ToAcc(xr[k]);
      const Acc<T> m = ToAcc(prev[k]);
      // Strict increase (ties keep the earlier position); NaN propagates.
      const bool take = (v > m) | (v != v);
      yr[k] = take ? xr[k] : prev[k];
    }
  }
}

// One unit of the backward, walking from the scan end to the scan start.
// `sum` is scratch space for `len` accumulators.
template <typename T>
void BackwardUnit(const ScanShape& s, const T* y, const T* g, T* dx,
                  int64_t len, Acc<T>* sum) {
  const int64_t end = s.reverse ? 0 : s.n - 1;  // last position scanned
  const int64_t step = s.reverse ? s.inner : -s.inner;  // toward the start
  const int64_t ahead = PrefetchRows<T>(len);
  std::fill(sum, sum + len, Acc<T>(0));
  int64_t offset = end * s.inner;
  for (int64_t t = s.n - 1; t >= 1; --t) {
    const T* yr = y + offset;
    const T* yp = yr + step;  // the previous position in scan order
    const T* gr = g + offset;
    T* dr = dx + offset;
    if (ahead > 0 && t - ahead >= 1) {
      Prefetch(yp + ahead * step, len, 0);
      Prefetch(gr + ahead * step, len, 0);
      Prefetch(dr + ahead * step, len, 1);
    }
    for (int64_t k = 0; k < len; ++k) {
      const Acc<T> acc = sum[k] + ToAcc(gr[k]);
      const Acc<T> cur = ToAcc(yr[k]);
      const Acc<T> prev = ToAcc(yp[k]);
      const bool record = (cur != prev) & (prev == prev);
      dr[k] = static_cast<T>(record ? acc : Acc<T>(0));
      sum[k] = record ? Acc<T>(0) : acc;
    }
    offset += step;
  }
  // The scan start owns whatever is left.
  for (int64_t k = 0; k < len; ++k) {
    dx[offset + k] = static_cast<T>(sum[k] + ToAcc(g[offset + k]));
  }
}

// Runs fn(base, len) over every (outer, column block) unit on the
// intra-op thread pool; `streams` is the number of tensors read + written.
template <typename T, typename Fn>
void ParallelUnits(const CPUDevice& d, const ScanShape& s, int streams,
                   Fn fn) {
  const int64_t want_units = 4 * static_cast<int64_t>(d.numThreads());
  int64_t block = std::min(s.inner, kMaxBlock);
  while (block > kMinBlock &&
         s.outer * ((s.inner + block - 1) / block) < want_units) {
    block /= 2;
  }
  const int64_t blocks = (s.inner + block - 1) / block;
  const int64_t units = s.outer * blocks;
  const double unit_elements = static_cast<double>(s.n) * block;
  const Eigen::TensorOpCost cost(
      unit_elements * sizeof(T) * (streams - 1),  // bytes loaded
      unit_elements * sizeof(T),                  // bytes stored
      unit_elements * 3);                         // compute cycles
  d.parallelFor(units, cost, [&](Eigen::Index first, Eigen::Index last) {
    for (Eigen::Index u = first; u < last; ++u) {
      const int64_t o = u / blocks;
      const int64_t k0 = (u - o * blocks) * block;
      fn(o * s.n * s.inner + k0, std::min(block, s.inner - k0));
    }
  });
}

}  // namespace

template <typename T>
const char* DirectionalPoolFunctor<CPUDevice, T>::operator()(
    const CPUDevice& d, const ScanShape& s, const T* input, T* output) const {
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return nullptr;
  ParallelUnits<T>(d, s, 2, [&](int64_t base, int64_t len) {
    ForwardUnit(s, input + base, output + base, len);
  });
  return nullptr;
}

template <typename T>
const char* DirectionalPoolGradFunctor<CPUDevice, T>::operator()(
    const CPUDevice& d, const ScanShape& s, const T* output, const T* grad,
    T* backprop) const {
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return nullptr;
  ParallelUnits<T>(d, s, 3, [&](int64_t base, int64_t len) {
    Acc<T> sum[kMaxBlock];
    BackwardUnit(s, output + base, grad + base, backprop + base, len, sum);
  });
  return nullptr;
}

namespace {

absl::Status MakeScanShape(const TensorShape& shape, int axis, bool reverse,
                           ScanShape* s) {
  if (shape.dims() < 1 || axis >= shape.dims()) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis ", axis, " out of range for an input of shape ",
                     shape.DebugString()));
  }
  s->outer = 1;
  s->inner = 1;
  for (int i = 0; i < axis; ++i) s->outer *= shape.dim_size(i);
  for (int i = axis + 1; i < shape.dims(); ++i) s->inner *= shape.dim_size(i);
  s->n = shape.dim_size(axis);
  s->reverse = reverse;
  return absl::OkStatus();
}

}  // namespace

template <typename Device, typename T>
class DirectionalPoolOp : public OpKernel {
 public:
  explicit DirectionalPoolOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("axis", &axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    ScanShape s;
    OP_REQUIRES_OK(ctx, MakeScanShape(input.shape(), axis_, reverse_, &s));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input.shape(), &output));
    const char* error = DirectionalPoolFunctor<Device, T>()(
        ctx->eigen_device<Device>(), s, input.flat<T>().data(),
        output->flat<T>().data());
    OP_REQUIRES(ctx, error == nullptr,
                absl::InternalError(absl::StrCat(
                    "TfCenterNet>DirectionalPool failed: ", error)));
  }

 private:
  int axis_;
  bool reverse_;
};

template <typename Device, typename T>
class DirectionalPoolGradOp : public OpKernel {
 public:
  explicit DirectionalPoolGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("axis", &axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& output = ctx->input(0);
    const Tensor& grad = ctx->input(1);
    OP_REQUIRES(ctx, output.shape() == grad.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "output and grad shapes differ: ",
                    output.shape().DebugString(), " vs ",
                    grad.shape().DebugString())));
    ScanShape s;
    OP_REQUIRES_OK(ctx, MakeScanShape(output.shape(), axis_, reverse_, &s));
    Tensor* backprop = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, output.shape(), &backprop));
    const char* error = DirectionalPoolGradFunctor<Device, T>()(
        ctx->eigen_device<Device>(), s, output.flat<T>().data(),
        grad.flat<T>().data(), backprop->flat<T>().data());
    OP_REQUIRES(ctx, error == nullptr,
                absl::InternalError(absl::StrCat(
                    "TfCenterNet>DirectionalPoolGrad failed: ", error)));
  }

 private:
  int axis_;
  bool reverse_;
};

#define TFC_REGISTER(DEVICE_TYPE, DEV, T)                          \
  REGISTER_KERNEL_BUILDER(Name("TfCenterNet>DirectionalPool")         \
                              .Device(DEVICE_TYPE)                    \
                              .TypeConstraint<T>("T"),                \
                          DirectionalPoolOp<DEV, T>);                 \
  REGISTER_KERNEL_BUILDER(Name("TfCenterNet>DirectionalPoolGrad")     \
                              .Device(DEVICE_TYPE)                    \
                              .TypeConstraint<T>("T"),                \
                          DirectionalPoolGradOp<DEV, T>);

TFC_REGISTER(DEVICE_CPU, CPUDevice, float);
TFC_REGISTER(DEVICE_CPU, CPUDevice, Eigen::half);
TFC_REGISTER(DEVICE_CPU, CPUDevice, Eigen::bfloat16);
TFC_REGISTER(DEVICE_CPU, CPUDevice, double);

#if GOOGLE_CUDA
// Defined and instantiated in directional_pool_kernels_gpu.cu.cc.
#define TFC_DECLARE_GPU(T)                                        \
  extern template struct DirectionalPoolFunctor<GPUDevice, T>;     \
  extern template struct DirectionalPoolGradFunctor<GPUDevice, T>;
TFC_DECLARE_GPU(float);
TFC_DECLARE_GPU(double);
TFC_DECLARE_GPU(Eigen::half);
TFC_DECLARE_GPU(Eigen::bfloat16);
#undef TFC_DECLARE_GPU

TFC_REGISTER(DEVICE_GPU, GPUDevice, float);
TFC_REGISTER(DEVICE_GPU, GPUDevice, Eigen::half);
TFC_REGISTER(DEVICE_GPU, GPUDevice, Eigen::bfloat16);
TFC_REGISTER(DEVICE_GPU, GPUDevice, double);
#endif  // GOOGLE_CUDA

#undef TFC_REGISTER

}  // namespace tf_centernet
}  // namespace tensorflow
