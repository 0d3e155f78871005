// Greedy NMS with the +1 box convention (area = (x2 - x1 + 1) * (y2 - y1 + 1)), CPU and CUDA dispatch.
#pragma once
#include "checks.h"
#include "cpu/vision.h"
#ifdef WITH_CUDA
#include "cuda/vision.h"
#endif

// dets: (N, 4) [x1, y1, x2, y2]; scores: (N,). Returns the int64 indices of the kept boxes in ascending
// index order. CPU suppresses when IoU >= threshold, CUDA when IoU > threshold (as upstream).
inline at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  const char* op = "nms";
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, op, ": dets must have shape (N, 4), got ", dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0), op, ": scores must have shape (", dets.size(0),
              ",), got ", scores.sizes());
  mrcnn::check_floating(dets, "dets", op);
  mrcnn::check_same_device(dets, "dets", scores, "scores", op);
  mrcnn::check_same_dtype(dets, "dets", scores, "scores", op);
  auto d = dets.contiguous();
  auto s = scores.contiguous();
  if (d.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, nms_cuda(d, s, threshold));
  }
  return nms_cpu(d, s, threshold);
}
