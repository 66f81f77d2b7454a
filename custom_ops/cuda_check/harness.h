// The checks shared by check_directional_pool.cu (kernels on a GPU) and
// emulate_on_host.cc (the same kernels run on the CPU, thread by thread).
// Plain C++: a program supplies "Ops" that run the kernels; this file
// supplies the inputs, the compositions the layers build from the four
// directional pools, the CPU reference (reference.h) and the comparisons.
//
// Compositions (tf_centernet/layers/pooling.py, docs/reference.md §2), the
// convolutions left out (their outputs are the random inputs here):
//   corner_tl  = top(a) + left(b)                     (CornerPooling)
//   corner_br  = bottom(a) + right(b)
//   cascade_tl = top(p + left(q)) + left(r + top(s))  (CascadeCornerPooling)
//   cascade_br = bottom(p + right(q)) + right(r + bottom(s))
//   center     = bottom(top(a)) + right(left(b))      (CenterPooling:
//                column_max + row_max, ops/pooling.py)
// Every intermediate is a tensor of the storage type, as in TensorFlow (a
// float16 sum is rounded to float16 before it is pooled), and both sides
// compose the same way, so only the primitives differ.
//
// Comparisons:
//   forward:  bit-exact (NaN only has to be NaN on both sides).
//   backward, "exact" gradients (multiples of 1/16 in [-4, 4]): every
//     partial sum is exactly representable in float, whatever the order, so
//     the kernels' float sums equal the reference's double sums rounded
//     once: compared exactly, in every dtype.
//   backward, "gauss" gradients (float32 only): the kernels sum in float in
//     scan order, the reference in double; |got - want| <=
//     2 (H + W + 2) 2^-24 sum|g| (the routed absolute gradient; at most two
//     chained sums of at most max(H, W) terms each, plus roundings).

#ifndef TF_CENTERNET_CUDA_CHECK_HARNESS_H_
#define TF_CENTERNET_CUDA_CHECK_HARNESS_H_

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "reference.h"

// ---------------------------------------------------------------- random inputs

inline uint64_t Mix(uint64_t z) {  // splitmix64's finaliser
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// A counter-based stream: the same values whatever the thread count.
inline uint64_t Random(uint64_t seed, uint64_t stream, uint64_t i) {
  return Mix(Mix(seed * 0x100000001b3ull + stream) ^ Mix(i));
}
inline double Uniform01(uint64_t r) { return (static_cast<double>(r >> 11) + 0.5) * 0x1p-53; }
inline double Gauss(uint64_t r1, uint64_t r2) {
  return std::sqrt(-2.0 * std::log(Uniform01(r1))) * std::cos(6.283185307179586 * Uniform01(r2));
}

enum class Values {
  kTies,    // {-2, -1, -0, +0, 1}, and 0.5% each of +-extreme
  kNormal,  // N(-3, 1) rounded to the dtype, and 0.5% each of +-extreme
  kNaN,     // the tie values and 3% NaN (directions only)
};
enum class Grads {
  kExact,  // k/16, k in [-64, 64]
  kGauss,  // N(0, 1)
};
inline const char* Name(Values v) {
  return v == Values::kTies ? "ties" : v == Values::kNormal ? "normal" : "nan";
}
inline const char* Name(Grads g) { return g == Grads::kExact ? "exact" : "gauss"; }

template <typename S>
std::vector<typename S::Bits> MakeValues(int64_t n, Values kind, uint64_t seed, uint64_t stream) {
  std::vector<typename S::Bits> v(n);
  ParallelFor(n, [&](int64_t begin, int64_t end) {
    static const double kTie[] = {-2.0, -1.0, -0.0, 0.0, 1.0};
    for (int64_t e = begin; e < end; ++e) {
      const uint64_t r = Random(seed, stream, e);
      const int pick = static_cast<int>(r % 1000);
      double x;
      if (kind == Values::kNaN) {
        x = pick < 30 ? NAN : kTie[(r >> 32) % 5];
      } else if (pick < 5) {
        x = S::kExtreme;
      } else if (pick < 10) {
        x = -S::kExtreme;
      } else if (kind == Values::kTies) {
        x = kTie[(r >> 32) % 5];
      } else {
        x = -3.0 + Gauss(r, Random(seed, stream + 0x5151, e));
      }
      v[e] = FromDouble<S>(x);
    }
  });
  return v;
}

template <typename S>
std::vector<typename S::Bits> MakeGrads(int64_t n, Grads kind, uint64_t seed, uint64_t stream) {
  std::vector<typename S::Bits> v(n);
  ParallelFor(n, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const uint64_t r = Random(seed, stream, e);
      const double x = kind == Grads::kExact ? (static_cast<int>(r % 129) - 64) / 16.0
                                             : Gauss(r, Random(seed, stream + 0x5151, e));
      v[e] = FromDouble<S>(x);
    }
  });
  return v;
}

// ---------------------------------------------------------------- programs

// c = a + b in Acc<T>, rounded to T (how TensorFlow adds two tensors of
// T): the sums of the compositions. The emulation defines __global__ and
// the thread indices away.
template <typename T>
__global__ void AddKernel(int64_t n, const T* __restrict__ a, const T* __restrict__ b,
                          T* __restrict__ c) {
  using A = tensorflow::tf_centernet::Acc<T>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    c[e] = static_cast<T>(static_cast<A>(a[e]) + static_cast<A>(b[e]));
  }
}

enum class Kind { kDirection, kCorner, kCascade, kCenter };
struct Program {
  const char* name;
  Kind kind;
  int first, second;  // directions (kTop ...), -1 where unused
  int inputs, mids;
};
const Program kPrograms[] = {
    {"top", Kind::kDirection, kTop, -1, 1, 0},
    {"left", Kind::kDirection, kLeft, -1, 1, 0},
    {"bottom", Kind::kDirection, kBottom, -1, 1, 0},
    {"right", Kind::kDirection, kRight, -1, 1, 0},
    {"corner_tl", Kind::kCorner, kTop, kLeft, 2, 2},
    {"corner_br", Kind::kCorner, kBottom, kRight, 2, 2},
    {"cascade_tl", Kind::kCascade, kTop, kLeft, 4, 6},
    {"cascade_br", Kind::kCascade, kBottom, kRight, 4, 6},
    {"center", Kind::kCenter, -1, -1, 2, 6},
};
constexpr int kNumPrograms = sizeof(kPrograms) / sizeof(kPrograms[0]);

// One program on one backend. Ops provides Tensor, New(), Pool(shape, x, y),
// PoolGrad(shape, x, y, g, dx) (x: the pool's input, y: its output; the
// kernels use y, the reference x) and Add(n, a, b, c).
template <typename Ops>
struct Run {
  using Tensor = typename Ops::Tensor;
  Ops& ops;
  const Program& p;
  Dims dims;
  std::vector<Tensor> in, mid, grad;  // grad[i]: gradient of in[i]
  Tensor out, g;
  int64_t touched = 0;  // elements read + written by the last Forward/Backward

  Run(Ops& ops_, const Program& p_, const Dims& d) : ops(ops_), p(p_), dims(d) {
    for (int i = 0; i < p.inputs; ++i) in.push_back(ops.New());
    for (int i = 0; i < p.inputs; ++i) grad.push_back(ops.New());
    for (int i = 0; i < p.mids; ++i) mid.push_back(ops.New());
    out = ops.New();
    g = ops.New();
  }

  void Pool(int d, Tensor x, Tensor y) {
    ops.Pool(MakeShape(dims, kDirections[d]), x, y);
    touched += 2 * dims.size();
  }
  void Grad(int d, Tensor x, Tensor y, Tensor upstream, Tensor dx) {
    ops.PoolGrad(MakeShape(dims, kDirections[d]), x, y, upstream, dx);
    touched += 3 * dims.size();
  }
  void Add(Tensor a, Tensor b, Tensor c) {
    ops.Add(dims.size(), a, b, c);
    touched += 3 * dims.size();
  }

  void Forward() {
    touched = 0;
    const int a = p.first, b = p.second;
    switch (p.kind) {
      case Kind::kDirection:
        Pool(a, in[0], out);
        break;
      case Kind::kCorner:
        Pool(a, in[0], mid[0]);
        Pool(b, in[1], mid[1]);
        Add(mid[0], mid[1], out);
        break;
      case Kind::kCascade:  // first(p + second(q)) + second(r + first(s))
        Pool(b, in[1], mid[0]);
        Add(in[0], mid[0], mid[1]);
        Pool(a, mid[1], mid[2]);
        Pool(a, in[3], mid[3]);
        Add(in[2], mid[3], mid[4]);
        Pool(b, mid[4], mid[5]);
        Add(mid[2], mid[5], out);
        break;
      case Kind::kCenter:  // bottom(top(a)) + right(left(b))
        Pool(kTop, in[0], mid[0]);
        Pool(kBottom, mid[0], mid[1]);
        Pool(kLeft, in[1], mid[2]);
        Pool(kRight, mid[2], mid[3]);
        Add(mid[1], mid[3], out);
        break;
    }
  }

  // The gradient of a sum passes unchanged to both terms.
  void Backward() {
    touched = 0;
    const int a = p.first, b = p.second;
    switch (p.kind) {
      case Kind::kDirection:
        Grad(a, in[0], out, g, grad[0]);
        break;
      case Kind::kCorner:
        Grad(a, in[0], mid[0], g, grad[0]);
        Grad(b, in[1], mid[1], g, grad[1]);
        break;
      case Kind::kCascade:
        Grad(a, mid[1], mid[2], g, grad[0]);        // d(p + second(q)) = dp
        Grad(b, in[1], mid[0], grad[0], grad[1]);   // dq
        Grad(b, mid[4], mid[5], g, grad[2]);        // d(r + first(s)) = dr
        Grad(a, in[3], mid[3], grad[2], grad[3]);   // ds
        break;
      case Kind::kCenter:
        Grad(kBottom, mid[0], mid[1], g, mid[4]);
        Grad(kTop, in[0], mid[0], mid[4], grad[0]);
        Grad(kRight, mid[2], mid[3], g, mid[5]);
        Grad(kLeft, in[1], mid[2], mid[5], grad[1]);
        break;
    }
  }
};

// The CPU reference as Ops. Tensors are left uninitialised until the
// reference writes them (in parallel: no serial zeroing of large buffers).
template <typename S>
struct RefOps {
  using Bits = typename S::Bits;
  using Tensor = Bits*;
  int64_t n;
  std::deque<std::unique_ptr<Bits[]>> store;
  RefOps(int64_t n_, int = 0) : n(n_) {}
  Tensor New() {
    store.emplace_back(new Bits[std::max<int64_t>(n, 1)]);
    return store.back().get();
  }
  void Upload(Tensor t, const std::vector<Bits>& v) {
    ParallelFor(n, [&](int64_t begin, int64_t end) {
      std::copy(v.begin() + begin, v.begin() + end, t + begin);
    });
  }
  void Download(Tensor t, std::vector<Bits>* v) { v->assign(t, t + n); }
  void Pool(const ScanShape& s, Tensor x, Tensor y) { ReferencePool<S>(s, x, y); }
  void PoolGrad(const ScanShape& s, Tensor x, Tensor, Tensor g, Tensor dx) {
    ReferencePoolGrad<S>(s, x, g, dx);
  }
  void Add(int64_t count, Tensor a, Tensor b, Tensor c) { ReferenceAdd<S>(count, a, b, c); }
  const char* Finish() { return nullptr; }
};

// ---------------------------------------------------------------- comparisons

struct Tally {
  int64_t comparisons = 0, failures = 0, configs = 0, failed_configs = 0;
};

inline std::string Where(const Dims& d, int64_t e) {
  char buf[96];
  const int c = static_cast<int>(e % d.c);
  e /= d.c;
  const int j = static_cast<int>(e % d.w);
  e /= d.w;
  const int i = static_cast<int>(e % d.h);
  std::snprintf(buf, sizeof buf, "(%d,%d,%d,%d)", static_cast<int>(e / d.h), i, j, c);
  return buf;
}

// Mismatches of got against want; "" when equal, else a description.
// mode 0: bits (NaN == NaN); 1: values (-0 == +0); 2: |got - want| <= tol * abs.
template <typename S>
std::string Compare(const Dims& dims, const std::vector<typename S::Bits>& got,
                    const std::vector<typename S::Bits>& want, int mode,
                    const std::vector<typename S::Bits>* abs = nullptr, double tol = 0) {
  int64_t bad = 0, first = -1;
  std::mutex mutex;
  ParallelFor(static_cast<int64_t>(got.size()), [&](int64_t begin, int64_t end) {
    int64_t local_bad = 0, local_first = -1;
    for (int64_t e = begin; e < end; ++e) {
      bool same;
      if (mode == 0) {
        same = got[e] == want[e] || (IsNaN<S>(got[e]) && IsNaN<S>(want[e]));
      } else if (mode == 1) {
        same = ToDouble<S>(got[e]) == ToDouble<S>(want[e]);
      } else {
        same = std::fabs(ToDouble<S>(got[e]) - ToDouble<S>(want[e])) <=
               tol * ToDouble<S>((*abs)[e]);
      }
      if (!same && local_bad++ == 0) local_first = e;
    }
    std::lock_guard<std::mutex> lock(mutex);
    bad += local_bad;
    if (local_first >= 0 && (first < 0 || local_first < first)) first = local_first;
  });
  if (bad == 0) return "";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%" PRId64 " of %zu differ, first at %s: got %.9g want %.9g%s",
                bad, got.size(), Where(dims, first).c_str(), ToDouble<S>(got[first]),
                ToDouble<S>(want[first]), mode == 2 ? " (beyond the tolerance)" : "");
  return buf;
}

inline std::string ShapeName(const Dims& d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "(%d,%d,%d,%d)", d.b, d.h, d.w, d.c);
  return buf;
}

struct Config {
  Dims dims;
  Values values;
  Grads grads;
  int grid;  // 0: the launchers' grid (fills the device); k > 0: at most k blocks
};

// Every program (directions only for NaN inputs) on one configuration: the
// backend DevOps<S>(elements, grid) against RefOps<S>. One line per config,
// plus one per mismatch.
template <typename S, template <typename> class DevOps>
bool CheckConfig(const Config& cfg, uint64_t seed, Tally* tally) {
  using Bits = typename S::Bits;
  const Dims& dims = cfg.dims;
  const int64_t n = dims.size();
  const int programs = cfg.values == Values::kNaN ? 4 : kNumPrograms;
  int comparisons = 0;
  std::vector<std::string> problems;
  for (int pi = 0; pi < programs; ++pi) {
    const Program& p = kPrograms[pi];
    RefOps<S> ref(n);
    DevOps<S> dev(n, cfg.grid);
    Run<RefOps<S>> want(ref, p, dims);
    Run<DevOps<S>> got(dev, p, dims);
    for (int i = 0; i < p.inputs; ++i) {
      const std::vector<Bits> x = MakeValues<S>(n, cfg.values, seed, pi * 16 + i);
      ref.Upload(want.in[i], x);
      dev.Upload(got.in[i], x);
    }
    const std::vector<Bits> g = MakeGrads<S>(n, cfg.grads, seed, pi * 16 + 15);
    ref.Upload(want.g, g);
    dev.Upload(got.g, g);
    want.Forward();
    want.Backward();
    got.Forward();
    got.Backward();
    if (const char* error = dev.Finish()) {
      problems.push_back(std::string(p.name) + ": " + error);
      ++comparisons;
      continue;
    }
    std::vector<Bits> a, b;
    dev.Download(got.out, &a);
    ref.Download(want.out, &b);
    std::string diff = Compare<S>(dims, a, b, 0);
    ++comparisons;
    if (!diff.empty()) problems.push_back(std::string(p.name) + " forward: " + diff);
    // Gauss gradients: the routed |g| for the tolerance, on the reference.
    std::vector<std::vector<Bits>> want_grad(p.inputs), abs_grad(p.inputs);
    for (int i = 0; i < p.inputs; ++i) ref.Download(want.grad[i], &want_grad[i]);
    const double tol = 2.0 * (dims.h + dims.w + 2) * S::kUnit;
    if (cfg.grads == Grads::kGauss) {
      std::vector<Bits> abs_g(g);
      for (Bits& v : abs_g) v = FromDouble<S>(std::fabs(ToDouble<S>(v)));
      ref.Upload(want.g, abs_g);
      want.Backward();
      for (int i = 0; i < p.inputs; ++i) ref.Download(want.grad[i], &abs_grad[i]);
    }
    for (int i = 0; i < p.inputs; ++i) {
      dev.Download(got.grad[i], &a);
      diff = cfg.grads == Grads::kExact ? Compare<S>(dims, a, want_grad[i], 1)
                                        : Compare<S>(dims, a, want_grad[i], 2, &abs_grad[i], tol);
      ++comparisons;
      if (!diff.empty()) {
        problems.push_back(std::string(p.name) + " backward d(input " + std::to_string(i) +
                           "): " + diff);
      }
    }
  }
  const bool ok = problems.empty();
  std::printf("%-4s %-8s %-16s %-6s grads %-5s grid %-4s  %d programs, %d comparisons%s\n",
              ok ? "ok" : "FAIL", S::name, ShapeName(dims).c_str(), Name(cfg.values),
              Name(cfg.grads), cfg.grid ? std::to_string(cfg.grid).c_str() : "full", programs,
              comparisons, ok ? " equal" : "");
  for (const std::string& problem : problems) std::printf("       %s\n", problem.c_str());
  std::fflush(stdout);
  tally->comparisons += comparisons;
  tally->failures += static_cast<int64_t>(problems.size());
  tally->configs += 1;
  tally->failed_configs += ok ? 0 : 1;
  return ok;
}

// The fast reference against the brute force (float32, exact gradients):
// the reference the large shapes rely on is itself checked.
inline bool CheckReferenceAgainstBruteForce(const Dims& dims, Values values, uint64_t seed,
                                            Tally* tally) {
  bool ok = true;
  const int64_t n = dims.size();
  for (int d = 0; d < 4; ++d) {
    const std::vector<uint32_t> xb = MakeValues<F32>(n, values, seed, 100 + d);
    const std::vector<uint32_t> gb = MakeGrads<F32>(n, Grads::kExact, seed, 200 + d);
    std::vector<float> x(n), g(n), y_gold;
    std::vector<double> dx_gold;
    for (int64_t e = 0; e < n; ++e) {
      x[e] = F32::ToAcc(xb[e]);
      g[e] = F32::ToAcc(gb[e]);
    }
    BruteForce(dims, kDirections[d], x, g, &y_gold, &dx_gold);
    std::vector<uint32_t> y(n), dx(n), y_want(n), dx_want(n);
    const ScanShape s = MakeShape(dims, kDirections[d]);
    ReferencePool<F32>(s, xb.data(), y.data());
    ReferencePoolGrad<F32>(s, xb.data(), gb.data(), dx.data());
    for (int64_t e = 0; e < n; ++e) {
      y_want[e] = F32::FromAcc(y_gold[e]);
      dx_want[e] = FromDouble<F32>(dx_gold[e]);
    }
    std::string diff = Compare<F32>(dims, y, y_want, 0);
    const std::string diff_dx = Compare<F32>(dims, dx, dx_want, 1);
    if (!diff_dx.empty()) diff += (diff.empty() ? "" : "; ") + std::string("gradient: ") + diff_dx;
    tally->comparisons += 2;
    if (!diff.empty()) {
      ++tally->failures;
      ok = false;
      std::printf("FAIL reference vs brute force %-6s %s %s: %s\n", kDirections[d].name,
                  ShapeName(dims).c_str(), Name(values), diff.c_str());
    }
  }
  return ok;
}

#endif  // TF_CENTERNET_CUDA_CHECK_HARNESS_H_
