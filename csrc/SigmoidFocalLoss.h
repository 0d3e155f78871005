// Sigmoid focal loss (RetinaNet), CPU and CUDA dispatch.
#pragma once
#include "checks.h"
#include "cpu/vision.h"
#ifdef WITH_CUDA
#include "cuda/vision.h"
#endif

inline void check_focal_inputs(const at::Tensor& logits, const at::Tensor& targets, int64_t num_classes,
                               const char* op) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == num_classes, op, ": logits must have shape (N, ", num_classes,
              "), got ", logits.sizes());
  mrcnn::check_floating(logits, "logits", op);
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), op, ": targets must have shape (",
              logits.size(0), ",), got ", targets.sizes());
  TORCH_CHECK(targets.scalar_type() == at::kInt || targets.scalar_type() == at::kLong, op,
              ": targets must be int32 or int64 labels (0 = background, 1..C, negative = ignored), got ",
              targets.scalar_type());
  mrcnn::check_same_device(logits, "logits", targets, "targets", op);
}

// logits: (N, C); targets: (N,) with 0 = background, 1..C = class, < 0 = ignored.
// Returns the element-wise loss, (N, C).
inline at::Tensor SigmoidFocalLoss_forward(const at::Tensor& logits, const at::Tensor& targets, int64_t num_classes,
                                           double gamma, double alpha) {
  const char* op = "SigmoidFocalLoss_forward";
  check_focal_inputs(logits, targets, num_classes, op);
  auto l = logits.contiguous();
  auto t = targets.to(at::kInt).contiguous();
  if (l.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, SigmoidFocalLoss_forward_cuda(l, t, num_classes, gamma, alpha));
  }
  return SigmoidFocalLoss_forward_cpu(l, t, num_classes, gamma, alpha);
}

// d_losses: (N, C). Returns the gradient of the logits, (N, C).
inline at::Tensor SigmoidFocalLoss_backward(const at::Tensor& logits, const at::Tensor& targets,
                                            const at::Tensor& d_losses, int64_t num_classes, double gamma,
                                            double alpha) {
  const char* op = "SigmoidFocalLoss_backward";
  check_focal_inputs(logits, targets, num_classes, op);
  TORCH_CHECK(d_losses.sizes() == logits.sizes(), op, ": d_losses must have the shape of logits ", logits.sizes(),
              ", got ", d_losses.sizes());
  mrcnn::check_same_dtype(logits, "logits", d_losses, "d_losses", op);
  mrcnn::check_same_device(logits, "logits", d_losses, "d_losses", op);
  auto l = logits.contiguous();
  auto t = targets.to(at::kInt).contiguous();
  auto d = d_losses.contiguous();
  if (l.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, SigmoidFocalLoss_backward_cuda(l, t, d, num_classes, gamma, alpha));
  }
  return SigmoidFocalLoss_backward_cpu(l, t, d, num_classes, gamma, alpha);
}
