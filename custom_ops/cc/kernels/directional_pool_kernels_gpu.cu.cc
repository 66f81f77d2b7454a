// CUDA functors of the directional pooling ops: TensorFlow's GPU stream and
// device limits around the kernels of directional_pool_cuda.cuh.

#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include "directional_pool.h"
#include "directional_pool_cuda.cuh"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tf_centernet {

using GPUDevice = Eigen::GpuDevice;

namespace {

// A grid that fills this device (no fixed launch size).
int MaxBlocks(const GPUDevice& d) {
  const int per_sm = d.maxGpuThreadsPerMultiProcessor() / cuda::kThreadsPerBlock;
  return d.getNumGpuMultiProcessors() * (per_sm > 0 ? per_sm : 1);
}

}  // namespace

template <typename T>
const char* DirectionalPoolFunctor<GPUDevice, T>::operator()(
    const GPUDevice& d, const ScanShape& s, const T* input, T* output) const {
  return cuda::LaunchForward<T>(s, input, output, MaxBlocks(d), d.stream());
}

template <typename T>
const char* DirectionalPoolGradFunctor<GPUDevice, T>::operator()(
    const GPUDevice& d, const ScanShape& s, const T* output, const T* grad,
    T* backprop) const {
  return cuda::LaunchBackward<T>(s, output, grad, backprop, MaxBlocks(d),
                                 d.stream());
}

template struct DirectionalPoolFunctor<GPUDevice, float>;
template struct DirectionalPoolFunctor<GPUDevice, double>;
template struct DirectionalPoolFunctor<GPUDevice, Eigen::half>;
template struct DirectionalPoolFunctor<GPUDevice, Eigen::bfloat16>;
template struct DirectionalPoolGradFunctor<GPUDevice, float>;
template struct DirectionalPoolGradFunctor<GPUDevice, double>;
template struct DirectionalPoolGradFunctor<GPUDevice, Eigen::half>;
template struct DirectionalPoolGradFunctor<GPUDevice, Eigen::bfloat16>;

}  // namespace tf_centernet
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
