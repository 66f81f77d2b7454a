// CPU kernel of the compiled per-class soft-NMS (ops/soft_nms_ops.cc).
// docs/reference.md §7.6-7.7.
//
// Per image, the candidates at or above the threshold are grouped by class
// (stable: candidate index order within a class) into columns (x1, y1, x2,
// y2, area, score, ...). Classes never interact, so each class is a separate
// greedy soft-NMS; a max-heap over the classes, keyed by (best current score,
// lowest candidate index), hands out the selections in the order the
// one-selection-per-iteration graph loop makes them, ties included.
// Selecting a box touches only its own class, in branch-free passes, the
// IoU with the selected box, the weights and the decay vectorised (the file
// is compiled with -fno-trapping-math, see build.py), then the class's next
// best. Selected boxes and boxes decayed below the threshold are marked
// dead (score -inf) instead of being removed; a class is compacted once half
// of it is dead. A whole image costs max_detections passes over one class
// each, against the graph loop's passes over every candidate, each made of
// dozens of separately dispatched ops.
//
// The arithmetic is the graph loop's, in float32 and in the same order
// (areas, intersection, union = (area_best + area) - inter, IoU = 0 where the
// union is 0, w = exp(-(IoU * IoU) / sigma) with Eigen's vectorised exp, as
// TensorFlow's Exp kernel), so selections agree with it, and scores to the
// last bit except where one of them takes exp's scalar path for an element
// the other vectorises (1 ulp). Boxes that do not overlap the selected one
// get IoU 0 and w = exp(-0) = 1 exactly: their scores do not change. The
// merge sums are accumulated in double (the graph reduces in float32 in a
// tree order): merged boxes agree to float rounding.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <queue>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tensorflow {
namespace tf_centernet {

namespace {

struct SoftNmsParams {
  int max_detections;
  float sigma;
  float score_threshold;
  float one;  // 1 for pixel-inclusive widths, else 0
  bool merge;
  float weight_exp;
};

// A class's next selection: its best remaining candidate.
struct HeapEntry {
  float score;
  int32_t index;  // candidate index, for ties across classes
  int32_t group;  // class group
};

// priority_queue is a max-heap on "less": higher score first, then lower index.
struct Later {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    if (a.score != b.score) return a.score < b.score;
    return a.index > b.index;
  }
};

// The candidates of one image, grouped by class, as columns (structure of
// arrays, so that the per-selection passes vectorise). A class occupies
// [begin, begin + size) and shrinks in place as its boxes are selected or
// dropped.
struct Columns {
  std::vector<float> x1, y1, x2, y2, area, score, tl, br;
  std::vector<int32_t> index;  // position in the image's candidate list (the tie rule)

  void Resize(size_t n) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area, &score, &tl, &br}) v->resize(n);
    index.resize(n);
  }
  void Move(int64_t to, int64_t from) {
    x1[to] = x1[from];
    y1[to] = y1[from];
    x2[to] = x2[from];
    y2[to] = y2[from];
    area[to] = area[from];
    score[to] = score[from];
    tl[to] = tl[from];
    br[to] = br[from];
    index[to] = index[from];
  }
};

struct Group {
  int64_t begin, size;
  int32_t cls;
};

// Score of a selected box or of one decayed below the threshold.
constexpr float kDead = -std::numeric_limits<float>::infinity();

// Offset in score[0, size) of the best live candidate, or -1 when all are
// dead: the maximum (one pass), then its first position, i.e. the
// lowest index among equal scores, as a class is in index order.
inline int64_t BestOf(const float* score, int64_t size) {
  float best_score = kDead;
  for (int64_t j = 0; j < size; ++j) best_score = score[j] > best_score ? score[j] : best_score;
  if (best_score == kDead) return -1;
  int64_t best = 0;
  while (score[best] != best_score) ++best;
  return best;
}

// Soft-NMS of one image. Outputs are zero-filled by the caller.
void SoftNmsImage(const float* boxes, const float* scores, const int32_t* classes,
                  const float* tl_scores, const float* br_scores, int64_t n,
                  const SoftNmsParams& p, float* out_boxes, float* out_scores,
                  int32_t* out_classes, int32_t* out_count) {
  const float one = p.one;
  // Candidates at or above the threshold (NaN never is), stably by class.
  std::vector<int32_t> order;
  order.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (scores[i] >= p.score_threshold) order.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(order.begin(), order.end(),
                   [classes](int32_t a, int32_t b) { return classes[a] < classes[b]; });
  const int64_t m = static_cast<int64_t>(order.size());
  Columns col;
  col.Resize(m);
  std::vector<Group> groups;
  for (int64_t k = 0; k < m; ++k) {
    const int32_t i = order[k];
    if (k == 0 || classes[i] != groups.back().cls) groups.push_back({k, 0, classes[i]});
    ++groups.back().size;
    const float* b = boxes + 4 * i;
    col.x1[k] = b[0];
    col.y1[k] = b[1];
    col.x2[k] = b[2];
    col.y2[k] = b[3];
    col.area[k] = (b[2] - b[0] + one) * (b[3] - b[1] + one);
    col.score[k] = scores[i];
    col.tl[k] = p.merge ? tl_scores[i] : 0.0f;
    col.br[k] = p.merge ? br_scores[i] : 0.0f;
    col.index[k] = i;
  }
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, Later> heap;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t best = groups[g].begin + BestOf(col.score.data() + groups[g].begin, groups[g].size);
    heap.push({col.score[best], col.index[best], static_cast<int32_t>(g)});
  }

  // A selected or dropped box is marked dead (score -inf) rather than
  // removed: the passes below stay branch-free and vectorised over the
  // whole class, which is compacted once half of it is dead.
  std::vector<float> iou(m), weight(m);  // per-selection scratch
  int32_t count = 0;
  while (count < p.max_detections && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    Group& group = groups[top.group];
    const int64_t begin = group.begin, size = group.size;
    // The selected candidate: the class's best (its key in the heap).
    int64_t sel = begin;
    while (col.index[sel] != top.index) ++sel;
    const float sx1 = col.x1[sel], sy1 = col.y1[sel], sx2 = col.x2[sel], sy2 = col.y2[sel];
    const float sarea = col.area[sel];
    col.score[sel] = kDead;
    const float* __restrict x1 = col.x1.data() + begin;
    const float* __restrict y1 = col.y1.data() + begin;
    const float* __restrict x2 = col.x2.data() + begin;
    const float* __restrict y2 = col.y2.data() + begin;
    const float* __restrict area = col.area.data() + begin;
    float* __restrict score = col.score.data() + begin;
    float* __restrict ov = iou.data();
    float* __restrict w = weight.data();
    // IoU with the selected box and the exponent. Boxes that do not overlap
    // get IoU 0 and w = exp(-0) = 1 exactly: their scores do not change.
    for (int64_t j = 0; j < size; ++j) {
      const float right = sx2 < x2[j] ? sx2 : x2[j];
      const float left = sx1 > x1[j] ? sx1 : x1[j];
      const float bottom = sy2 < y2[j] ? sy2 : y2[j];
      const float top_ = sy1 > y1[j] ? sy1 : y1[j];
      float iw = right - left + one;
      float ih = bottom - top_ + one;
      iw = iw > 0.0f ? iw : 0.0f;
      ih = ih > 0.0f ? ih : 0.0f;
      const float inter = iw * ih;
      const float uni = (sarea + area[j]) - inter;
      const bool empty = uni == 0.0f;
      const float o = (empty ? 0.0f : inter) / (empty ? 1.0f : uni);
      ov[j] = o;
      w[j] = -(o * o) / p.sigma;
    }
    {
      Eigen::Map<Eigen::ArrayXf> wm(w, size);
      wm = wm.exp();  // Eigen's vectorised exp, as TensorFlow's Exp kernel
    }
    double tl_sum = 0.0, br_sum = 0.0, x1_sum = 0.0, y1_sum = 0.0, x2_sum = 0.0, y2_sum = 0.0;
    if (p.merge) {
      const float* tl = col.tl.data() + begin;
      const float* br = col.br.data() + begin;
      for (int64_t j = 0; j < size; ++j) {
        if (!(ov[j] > 0.0f) || score[j] == kDead) continue;
        const float mw = std::pow(1.0f - w[j], p.weight_exp);
        const float tw = tl[j] * mw, bw = br[j] * mw;
        tl_sum += tw;
        br_sum += bw;
        x1_sum += static_cast<double>(x1[j] * tw);
        y1_sum += static_cast<double>(y1[j] * tw);
        x2_sum += static_cast<double>(x2[j] * bw);
        y2_sum += static_cast<double>(y2[j] * bw);
      }
    }
    // Decay; a box below the threshold (or NaN) dies.
    const float threshold = p.score_threshold;
    for (int64_t j = 0; j < size; ++j) {
      const float decayed = score[j] * w[j];
      score[j] = decayed >= threshold ? decayed : kDead;
    }

    float* box = out_boxes + 4 * count;
    box[0] = sx1;
    box[1] = sy1;
    box[2] = sx2;
    box[3] = sy2;
    if (p.merge) {
      const float stl = col.tl[sel], sbr = col.br[sel];
      const float mts = static_cast<float>(stl + tl_sum);
      const float mbs = static_cast<float>(sbr + br_sum);
      if (mts > 0.0f && mbs > 0.0f) {
        box[0] = static_cast<float>((static_cast<double>(sx1 * stl) + x1_sum) / mts);
        box[1] = static_cast<float>((static_cast<double>(sy1 * stl) + y1_sum) / mts);
        box[2] = static_cast<float>((static_cast<double>(sx2 * sbr) + x2_sum) / mbs);
        box[3] = static_cast<float>((static_cast<double>(sy2 * sbr) + y2_sum) / mbs);
      }
    }
    out_scores[count] = top.score;
    out_classes[count] = group.cls;
    ++count;

    // The class's next best.
    const int64_t best = BestOf(score, size);
    if (best < 0) continue;  // the class is exhausted
    heap.push({score[best], col.index[begin + best], top.group});
    // Compact once half of the class is dead (keeping index order).
    int64_t live = 0;
    for (int64_t j = 0; j < size; ++j) live += score[j] != kDead;
    if (2 * live < size) {
      int64_t kept = begin;
      for (int64_t j = begin; j < begin + size; ++j) {
        if (col.score[j] == kDead) continue;
        if (kept != j) col.Move(kept, j);
        ++kept;
      }
      group.size = kept - begin;
    }
  }
  *out_count = count;
}

class SoftNmsOp : public OpKernel {
 public:
  explicit SoftNmsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_detections", &params_.max_detections));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sigma", &params_.sigma));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("score_threshold", &params_.score_threshold));
    bool inclusive;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("inclusive", &inclusive));
    params_.one = inclusive ? 1.0f : 0.0f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("merge", &params_.merge));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weight_exp", &params_.weight_exp));
    OP_REQUIRES(ctx, params_.sigma > 0.0f,
                absl::InvalidArgumentError(absl::StrCat("sigma must be > 0, got ", params_.sigma)));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& boxes = ctx->input(0);
    const Tensor& scores = ctx->input(1);
    OP_REQUIRES(ctx, boxes.dims() == 3 && boxes.dim_size(2) == 4,
                absl::InvalidArgumentError(absl::StrCat(
                    "boxes must be (batch, n, 4), got ", boxes.shape().DebugString())));
    OP_REQUIRES(ctx, scores.dims() == 2 && scores.dim_size(0) == boxes.dim_size(0) &&
                         scores.dim_size(1) == boxes.dim_size(1),
                absl::InvalidArgumentError(absl::StrCat(
                    "scores must be (batch, n) = ", boxes.dim_size(0), ", ", boxes.dim_size(1),
                    ", got ", scores.shape().DebugString())));
    for (int i = 2; i < 5; ++i) {
      OP_REQUIRES(ctx, ctx->input(i).shape() == scores.shape(),
                  absl::InvalidArgumentError(absl::StrCat(
                      "input ", i, " must have the scores' shape ", scores.shape().DebugString(),
                      ", got ", ctx->input(i).shape().DebugString())));
    }
    const int64_t batch = boxes.dim_size(0), n = boxes.dim_size(1);
    const int64_t k = params_.max_detections;
    Tensor *out_boxes, *out_scores, *out_classes, *out_count;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, k, 4}), &out_boxes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({batch, k}), &out_scores));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({batch, k}), &out_classes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({batch}), &out_count));
    float* ob = out_boxes->flat<float>().data();
    float* os = out_scores->flat<float>().data();
    int32_t* oc = out_classes->flat<int32_t>().data();
    std::fill(ob, ob + batch * k * 4, 0.0f);
    std::fill(os, os + batch * k, 0.0f);
    std::fill(oc, oc + batch * k, 0);
    const float* b = boxes.flat<float>().data();
    const float* s = scores.flat<float>().data();
    const int32_t* c = ctx->input(2).flat<int32_t>().data();
    const float* tl = ctx->input(3).flat<float>().data();
    const float* br = ctx->input(4).flat<float>().data();
    int32_t* counts = out_count->flat<int32_t>().data();
    for (int64_t i = 0; i < batch; ++i) {
      SoftNmsImage(b + i * n * 4, s + i * n, c + i * n, tl + i * n, br + i * n, n, params_,
                   ob + i * k * 4, os + i * k, oc + i * k, counts + i);
    }
  }

 private:
  SoftNmsParams params_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("TfCenterNet>SoftNms").Device(DEVICE_CPU), SoftNmsOp);

}  // namespace tf_centernet
}  // namespace tensorflow
