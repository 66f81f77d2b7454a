// Brute-force CPU reference shared by the CUDA checks (plain C++).

#ifndef TF_CENTERNET_CUDA_CHECK_REFERENCE_H_
#define TF_CENTERNET_CUDA_CHECK_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "../cc/kernels/directional_pool.h"

using tensorflow::tf_centernet::ScanShape;

struct Direction {
  const char* name;
  int axis;      // 1: height, 2: width (NHWC)
  bool reverse;  // true: out[i] = max(x[i:])
};
const Direction kDirections[] = {
    {"top", 1, true}, {"left", 2, true}, {"bottom", 1, false}, {"right", 2, false}};

ScanShape MakeShape(const int dims[4], const Direction& d) {
  ScanShape s;
  s.outer = d.axis == 1 ? dims[0] : int64_t{dims[0]} * dims[1];
  s.n = dims[d.axis];
  s.inner = d.axis == 1 ? int64_t{dims[2]} * dims[3] : dims[3];
  s.reverse = d.reverse;
  return s;
}

// Brute force: for each output, search its whole range from the scan start,
// keeping the first maximum (strict >; a NaN beats everything and the
// first NaN is kept, as tf.maximum propagates NaN); the gradient goes there.
void Reference(const int dims[4], const Direction& d, const std::vector<float>& x,
               const std::vector<float>& g, std::vector<float>* y,
               std::vector<double>* dx) {
  const int B = dims[0], H = dims[1], W = dims[2], C = dims[3];
  auto at = [&](int b, int i, int j, int c) { return ((int64_t{b} * H + i) * W + j) * C + c; };
  y->assign(x.size(), 0.0f);
  dx->assign(x.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < H; ++i)
      for (int j = 0; j < W; ++j)
        for (int c = 0; c < C; ++c) {
          const int n = d.axis == 1 ? H : W;
          const int pos = d.axis == 1 ? i : j;
          // Scan order from the start to this output position.
          std::vector<int> order;
          if (d.reverse) {
            for (int p = n - 1; p >= pos; --p) order.push_back(p);
          } else {
            for (int p = 0; p <= pos; ++p) order.push_back(p);
          }
          int best = order[0];
          for (int p : order) {
            const float v = d.axis == 1 ? x[at(b, p, j, c)] : x[at(b, i, p, c)];
            const float m = d.axis == 1 ? x[at(b, best, j, c)] : x[at(b, i, best, c)];
            if (v > m || (v != v && m == m)) best = p;  // NaN: the first one
          }
          const int64_t src = d.axis == 1 ? at(b, best, j, c) : at(b, i, best, c);
          (*y)[at(b, i, j, c)] = x[src];
          (*dx)[src] += g[at(b, i, j, c)];
        }
}

#endif  // TF_CENTERNET_CUDA_CHECK_REFERENCE_H_
