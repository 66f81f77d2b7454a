// Registrations of the directional (corner) pooling ops. docs/reference.md §2.
//
// One op pair serves the four directions: a cumulative maximum along `axis`,
// scanned from index 0 (`reverse=false`) or from the last index
// (`reverse=true`). On an NHWC tensor:
//
//   top_pool    = DirectionalPool(axis=1, reverse=true)   out[i] = max(x[i:])
//   bottom_pool = DirectionalPool(axis=1, reverse=false)  out[i] = max(x[:i+1])
//   left_pool   = DirectionalPool(axis=2, reverse=true)
//   right_pool  = DirectionalPool(axis=2, reverse=false)
//
// The gradient op needs only the forward *output*, not the input: position p
// is the argmax of some outputs exactly when the running maximum changes
// there (see directional_pool.h), so no argmax tensor is stored.

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tf_centernet {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

namespace {

// Same shape as the input; `axis` must index a dimension of it.
absl::Status DirectionalPoolShape(InferenceContext* c, int num_inputs) {
  ShapeHandle shape;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &shape));
  for (int i = 1; i < num_inputs; ++i) {
    TF_RETURN_IF_ERROR(c->Merge(shape, c->input(i), &shape));
  }
  int axis;
  TF_RETURN_IF_ERROR(c->GetAttr("axis", &axis));
  if (c->RankKnown(shape) && (axis < 0 || axis >= c->Rank(shape))) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis ", axis, " out of range for an input of rank ",
                     c->Rank(shape)));
  }
  c->set_output(0, shape);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfCenterNet>DirectionalPool")
    .Input("input: T")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("axis: int >= 0")
    .Attr("reverse: bool = false")
    .SetShapeFn([](InferenceContext* c) { return DirectionalPoolShape(c, 1); })
    .Doc(R"doc(
Cumulative maximum along one axis (directional / corner pooling).

output[..., i, ...] = max(input[..., :i+1, ...]) along `axis`, or
max(input[..., i:, ...]) when `reverse`. NaN propagates like tf.maximum.

input: tensor of any rank >= 1.
output: same shape and dtype as `input`.
axis: the scanned dimension, 0 <= axis < rank.
reverse: scan from the last index toward index 0.
)doc");

REGISTER_OP("TfCenterNet>DirectionalPoolGrad")
    .Input("output: T")
    .Input("grad: T")
    .Output("backprop: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("axis: int >= 0")
    .Attr("reverse: bool = false")
    .SetShapeFn([](InferenceContext* c) { return DirectionalPoolShape(c, 2); })
    .Doc(R"doc(
Gradient of DirectionalPool with respect to its input.

Each incoming gradient goes to the position of its output's maximum; on ties,
to the tied position nearest the scan start (index 0, or the last index when
`reverse`). Computed from the forward output alone.

output: the forward op's output.
grad: the gradient with respect to `output`.
backprop: the gradient with respect to the forward op's input.
)doc");

}  // namespace tf_centernet
}  // namespace tensorflow
