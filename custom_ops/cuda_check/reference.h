// CPU references shared by the CUDA check (check_directional_pool.cu) and
// its host emulation (emulate_on_host.cc); plain C++, no CUDA needed.
//
//   * Storage types (float32, float64, float16, bfloat16) as raw bits, with
//     their own round-to-nearest-even conversions, so the reference does
//     not depend on cuda_fp16.h's host code (the device check compares
//     these conversions with the GPU's on every float).
//   * BruteForce(): for each output, search its whole range from the scan
//     start; O(n^2) per line, the gold for small shapes.
//   * ReferencePool() / ReferencePoolGrad(): one pass per line keeping the
//     argmax (no "record" trick, unlike the kernels), gradients summed in
//     double; fast enough for the releases' shapes and checked against
//     BruteForce() by both programs.

#ifndef TF_CENTERNET_CUDA_CHECK_REFERENCE_H_
#define TF_CENTERNET_CUDA_CHECK_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifndef CUDA_CHECK_NO_THREADS
#include <thread>
#endif

#include "../cc/kernels/directional_pool.h"

#ifdef __CUDACC__
#define CHECK_HD __host__ __device__
#else
#define CHECK_HD
#endif

using tensorflow::tf_centernet::ScanShape;

// ---------------------------------------------------------------- shapes

struct Dims {
  int b, h, w, c;  // NHWC
  int64_t size() const { return int64_t{b} * h * w * c; }
};

struct Direction {
  const char* name;
  int axis;      // 1: height, 2: width (NHWC)
  bool reverse;  // true: out[i] = max(x[i:]), the scan starts at the end
};
// tf_centernet/ops/pooling.py: top = axis 1 from the bottom row, left =
// axis 2 from the right, bottom = axis 1 from row 0, right = axis 2 from
// column 0.
enum { kTop = 0, kLeft = 1, kBottom = 2, kRight = 3 };
const Direction kDirections[] = {
    {"top", 1, true}, {"left", 2, true}, {"bottom", 1, false}, {"right", 2, false}};

inline ScanShape MakeShape(const Dims& d, const Direction& dir) {
  ScanShape s;
  s.outer = dir.axis == 1 ? d.b : int64_t{d.b} * d.h;
  s.n = dir.axis == 1 ? d.h : d.w;
  s.inner = dir.axis == 1 ? int64_t{d.w} * d.c : d.c;
  s.reverse = dir.reverse;
  return s;
}

// ---------------------------------------------------------------- storage types

CHECK_HD inline uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
CHECK_HD inline float BitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// float -> IEEE half, round to nearest even; NaN stays NaN (quiet).
CHECK_HD inline uint16_t FloatToHalfBits(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 (incl. inf): inf
  if (a < 0x38800000u) {                        // below 2^-14: subnormal or 0
    if (a <= 0x33000000u) return sign;          // <= 2^-25: rounds to 0
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(a >> 23);  // 14 .. 24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | static_cast<uint16_t>(q);
  }
  const uint32_t r = a - 0x38000000u;  // exponent bias 127 -> 15
  uint32_t q = r >> 13;
  const uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  return sign | static_cast<uint16_t>(q);
}

CHECK_HD inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return BitsFloat(FloatBits(v) | sign);
  }
  if (e == 31) return BitsFloat(sign | 0x7f800000u | (m << 13));
  return BitsFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// float -> bfloat16, round to nearest even; NaN stays NaN (quiet).
CHECK_HD inline uint16_t FloatToBf16Bits(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
CHECK_HD inline float Bf16BitsToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

// Each storage type: Bits (how a host vector holds it), Acc (the kernels'
// Acc<T>: maxima compared and gradients summed in it), conversions, a
// large finite value for the "extremes" and the unit roundoff of Acc.
struct F32 {
  using Bits = uint32_t;
  using Acc = float;
  static constexpr const char* name = "float32";
  static Acc ToAcc(Bits b) { return BitsFloat(b); }
  static Bits FromAcc(Acc a) { return FloatBits(a); }
  static constexpr double kExtreme = 3e38;
  static constexpr double kUnit = 5.9604644775390625e-8;  // 2^-24
};
struct F64 {
  using Bits = uint64_t;
  using Acc = double;
  static constexpr const char* name = "float64";
  static Acc ToAcc(Bits b) {
    double d;
    memcpy(&d, &b, 8);
    return d;
  }
  static Bits FromAcc(Acc a) {
    Bits b;
    memcpy(&b, &a, 8);
    return b;
  }
  static constexpr double kExtreme = 1.7e308;
  static constexpr double kUnit = 1.1102230246251565e-16;  // 2^-53
};
struct F16 {
  using Bits = uint16_t;
  using Acc = float;
  static constexpr const char* name = "float16";
  static Acc ToAcc(Bits b) { return HalfBitsToFloat(b); }
  static Bits FromAcc(Acc a) { return FloatToHalfBits(a); }
  static constexpr double kExtreme = 65504;  // the largest finite half
  static constexpr double kUnit = 5.9604644775390625e-8;
};
struct BF16 {
  using Bits = uint16_t;
  using Acc = float;
  static constexpr const char* name = "bfloat16";
  static Acc ToAcc(Bits b) { return Bf16BitsToFloat(b); }
  static Bits FromAcc(Acc a) { return FloatToBf16Bits(a); }
  static constexpr double kExtreme = 3e38;
  static constexpr double kUnit = 5.9604644775390625e-8;
};

// A double into S (through Acc: inputs, and exact gradient sums).
template <typename S>
typename S::Bits FromDouble(double d) {
  return S::FromAcc(static_cast<typename S::Acc>(d));
}
template <typename S>
double ToDouble(typename S::Bits b) {
  return static_cast<double>(S::ToAcc(b));
}
template <typename S>
bool IsNaN(typename S::Bits b) {
  return std::isnan(ToDouble<S>(b));
}

// ---------------------------------------------------------------- threads

inline int& NumThreads() {
  static int n = 1;
  return n;
}

// f(begin, end) over [0, n) in NumThreads() contiguous chunks.
template <typename F>
void ParallelFor(int64_t n, F f) {
  const int64_t threads = std::min<int64_t>(NumThreads(), n);
#ifndef CUDA_CHECK_NO_THREADS
  if (threads > 1) {
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t) {
      pool.emplace_back(f, n * t / threads, n * (t + 1) / threads);
    }
    for (auto& th : pool) th.join();
    return;
  }
#endif
  (void)threads;
  if (n > 0) f(0, n);
}

// ---------------------------------------------------------------- references

// Replace the running maximum m by v? Strict increase (ties keep the
// position nearest the scan start); the first NaN wins and is kept.
template <typename A>
inline bool Beats(A v, A m) {
  return v > m || (v != v && m == m);
}

// Lines are processed in chunks of this many neighbouring `inner`
// positions, so that every step reads contiguous memory.
constexpr int64_t kChunk = 256;

// y = the directional pool of x.
template <typename S>
void ReferencePool(const ScanShape& s, const typename S::Bits* x, typename S::Bits* y) {
  using Bits = typename S::Bits;
  const int64_t chunks = (s.inner + kChunk - 1) / kChunk;
  ParallelFor(s.outer * chunks, [&](int64_t begin, int64_t end) {
    std::vector<Bits> best(kChunk);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t o = job / chunks, k0 = (job % chunks) * kChunk;
      const int64_t width = std::min(kChunk, s.inner - k0);
      for (int64_t step = 0; step < s.n; ++step) {
        const int64_t t = s.reverse ? s.n - 1 - step : step;
        const int64_t base = (o * s.n + t) * s.inner + k0;
        for (int64_t k = 0; k < width; ++k) {
          const Bits v = x[base + k];
          if (step == 0 || Beats(S::ToAcc(v), S::ToAcc(best[k]))) best[k] = v;
          y[base + k] = best[k];
        }
      }
    }
  });
}

// dx = the gradient of the pool of x for the upstream gradient g: each g
// goes to its output's argmax (recomputed from x), summed in double, then
// rounded to S once.
template <typename S>
void ReferencePoolGrad(const ScanShape& s, const typename S::Bits* x, const typename S::Bits* g,
                       typename S::Bits* dx) {
  using Bits = typename S::Bits;
  const int64_t chunks = (s.inner + kChunk - 1) / kChunk;
  ParallelFor(s.outer * chunks, [&](int64_t begin, int64_t end) {
    std::vector<Bits> best(kChunk);
    std::vector<int64_t> where(kChunk);
    std::vector<double> sum(s.n * kChunk);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t o = job / chunks, k0 = (job % chunks) * kChunk;
      const int64_t width = std::min(kChunk, s.inner - k0);
      std::fill(sum.begin(), sum.end(), 0.0);
      for (int64_t step = 0; step < s.n; ++step) {
        const int64_t t = s.reverse ? s.n - 1 - step : step;
        const int64_t base = (o * s.n + t) * s.inner + k0;
        for (int64_t k = 0; k < width; ++k) {
          const Bits v = x[base + k];
          if (step == 0 || Beats(S::ToAcc(v), S::ToAcc(best[k]))) {
            best[k] = v;
            where[k] = t;
          }
          sum[where[k] * kChunk + k] += ToDouble<S>(g[base + k]);
        }
      }
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t base = (o * s.n + t) * s.inner + k0;
        for (int64_t k = 0; k < width; ++k) dx[base + k] = FromDouble<S>(sum[t * kChunk + k]);
      }
    }
  });
}

// c = a + b as TensorFlow adds two S tensors: in Acc, rounded to S.
template <typename S>
void ReferenceAdd(int64_t n, const typename S::Bits* a, const typename S::Bits* b,
                  typename S::Bits* c) {
  ParallelFor(n, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) c[e] = S::FromAcc(S::ToAcc(a[e]) + S::ToAcc(b[e]));
  });
}

// The gold: for each output, search its whole range from the scan start,
// keeping the first maximum; the gradient goes there (double sums).
inline void BruteForce(const Dims& dims, const Direction& d, const std::vector<float>& x,
                       const std::vector<float>& g, std::vector<float>* y,
                       std::vector<double>* dx) {
  const int B = dims.b, H = dims.h, W = dims.w, C = dims.c;
  auto at = [&](int b, int i, int j, int c) { return ((int64_t{b} * H + i) * W + j) * C + c; };
  y->assign(x.size(), 0.0f);
  dx->assign(x.size(), 0.0);
  const int n = d.axis == 1 ? H : W;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < H; ++i)
      for (int j = 0; j < W; ++j)
        for (int c = 0; c < C; ++c) {
          const int pos = d.axis == 1 ? i : j;
          auto value = [&](int p) { return d.axis == 1 ? x[at(b, p, j, c)] : x[at(b, i, p, c)]; };
          // The range of this output, from the scan start.
          const int first = d.reverse ? n - 1 : 0, step = d.reverse ? -1 : 1;
          int best = first;
          for (int p = first;; p += step) {
            if (Beats(value(p), value(best))) best = p;
            if (p == pos) break;
          }
          const int64_t src = d.axis == 1 ? at(b, best, j, c) : at(b, i, best, c);
          (*y)[at(b, i, j, c)] = x[src];
          (*dx)[src] += g[at(b, i, j, c)];
        }
}

#endif  // TF_CENTERNET_CUDA_CHECK_REFERENCE_H_
