// Registration of the compiled per-class soft-NMS. docs/reference.md §7.6-7.7.
//
// The same selections as `tf_centernet.decode.soft_nms`'s graph loops (the
// portable reference, and the path of exports and XLA): greedy, the
// remaining box with the highest current score first (ties: the lowest
// candidate index), each remaining box of the selected box's class scaled by
// exp(-IoU^2 / sigma), boxes below `score_threshold` dropped, until
// `max_detections` selections or no box is left. The kernel is in
// kernels/soft_nms_kernels.cc; it runs on the host (CPU) only.

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tf_centernet {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("TfCenterNet>SoftNms")
    .Input("boxes: float")
    .Input("scores: float")
    .Input("classes: int32")
    .Input("tl_scores: float")
    .Input("br_scores: float")
    .Output("selected_boxes: float")
    .Output("selected_scores: float")
    .Output("selected_classes: int32")
    .Output("num_detections: int32")
    .Attr("max_detections: int >= 0")
    .Attr("sigma: float")
    .Attr("score_threshold: float")
    .Attr("inclusive: bool = true")
    .Attr("merge: bool = false")
    .Attr("weight_exp: float = 8.0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle boxes, scores;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &boxes));
      DimensionHandle four;
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(boxes, 2), 4, &four));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &scores));
      for (int i = 2; i < 5; ++i) {
        TF_RETURN_IF_ERROR(c->Merge(scores, c->input(i), &scores));
      }
      ShapeHandle boxes_batch_n;  // (batch, n) of the boxes
      TF_RETURN_IF_ERROR(c->Subshape(boxes, 0, 2, &boxes_batch_n));
      TF_RETURN_IF_ERROR(c->Merge(scores, boxes_batch_n, &scores));
      int max_detections;
      TF_RETURN_IF_ERROR(c->GetAttr("max_detections", &max_detections));
      DimensionHandle batch = c->Dim(scores, 0);
      c->set_output(0, c->MakeShape({batch, max_detections, 4}));
      c->set_output(1, c->MakeShape({batch, max_detections}));
      c->set_output(2, c->MakeShape({batch, max_detections}));
      c->set_output(3, c->MakeShape({batch}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Per-class Gaussian soft-NMS keeping the best `max_detections` per image.

boxes: (batch, n, 4) x1, y1, x2, y2 in image pixels.
scores: (batch, n); candidates below `score_threshold` (or NaN) never enter.
classes: (batch, n); boxes of different classes never interact.
tl_scores: (batch, n) top-left corner scores (used when `merge`).
br_scores: (batch, n) bottom-right corner scores (used when `merge`).
selected_boxes: (batch, max_detections, 4); with `merge`, each selected box
  is the corner-score weighted mean of itself and the remaining overlapping
  boxes of its class (weights (1 - w)^weight_exp). Rows past
  num_detections are zero.
selected_scores: (batch, max_detections) scores at selection, non-increasing.
selected_classes: (batch, max_detections).
num_detections: (batch,) selections made.
sigma: Gaussian parameter, w = exp(-IoU^2 / sigma).
inclusive: pixel-inclusive widths and heights (x2 - x1 + 1).
)doc");

}  // namespace tf_centernet
}  // namespace tensorflow
