// Greedy NMS with the +1 box convention (area = (x2 - x1 + 1) * (y2 - y1 + 1)), CPU and CUDA dispatch; and
// batched NMS, the same NMS run independently per label in one call.
#pragma once
#include "checks.h"
#include "cpu/vision.h"
#ifdef WITH_CUDA
#include "cuda/vision.h"
#endif

inline void check_nms_inputs(const at::Tensor& dets, const at::Tensor& scores, const char* op) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, op, ": dets must have shape (N, 4), got ", dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0), op, ": scores must have shape (", dets.size(0),
              ",), got ", scores.sizes());
  mrcnn::check_floating(dets, "dets", op);
  mrcnn::check_same_device(dets, "dets", scores, "scores", op);
  mrcnn::check_same_dtype(dets, "dets", scores, "scores", op);
}

// dets: (N, 4) [x1, y1, x2, y2]; scores: (N,). Returns the int64 indices of the kept boxes in ascending
// index order. CPU suppresses when IoU >= threshold, CUDA when IoU > threshold (as upstream).
inline at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  check_nms_inputs(dets, scores, "nms");
  auto d = dets.contiguous();
  auto s = scores.contiguous();
  if (d.is_cuda()) {
    MRCNN_DISPATCH_CUDA("nms", nms_cuda(d, s, threshold));
  }
  return nms_cpu(d, s, threshold);
}

#ifdef WITH_CUDA
// nms_cuda on each label's boxes (in ascending index order), the kept indices merged in ascending order.
inline at::Tensor batched_nms_cuda(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                                   double threshold) {
  const at::Tensor order = std::get<1>(labels.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  const at::Tensor run_lengths = std::get<2>(at::unique_consecutive(labels.index_select(0, order),
                                                                    /*return_inverse=*/false,
                                                                    /*return_counts=*/true))
                                     .to(at::kCPU);
  const int64_t* lengths = run_lengths.data_ptr<int64_t>();
  std::vector<at::Tensor> kept;
  int64_t start = 0;
  for (int64_t i = 0; i < run_lengths.size(0); ++i) {
    const int64_t length = lengths[i];
    const at::Tensor run = order.narrow(0, start, length);
    kept.push_back(run.index_select(0, nms_cuda(dets.index_select(0, run), scores.index_select(0, run), threshold)));
    start += length;
  }
  return std::get<0>(at::cat(kept).sort(/*dim=*/0, /*descending=*/false));
}
#endif

// dets: (N, 4), scores: (N,), labels: (N,) int64. The boxes of each label are suppressed only by boxes of the same
// label, exactly as nms on that label's boxes alone. Returns the int64 indices of the kept boxes in ascending order.
inline at::Tensor batched_nms(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                              double threshold) {
  const char* op = "batched_nms";
  check_nms_inputs(dets, scores, op);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == dets.size(0), op, ": labels must have shape (", dets.size(0),
              ",), got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
  mrcnn::check_same_device(dets, "dets", labels, "labels", op);
  auto d = dets.contiguous();
  auto s = scores.contiguous();
  auto l = labels.contiguous();
  if (d.size(0) == 0) {
    return at::empty({0}, d.options().dtype(at::kLong));
  }
  if (d.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, batched_nms_cuda(d, s, l, threshold));
  }
  return batched_nms_cpu(d, s, l, threshold);
}
