// ROIAlign (Detectron v1: no half-pixel offset, RoI size clamped to >= 1), CPU and CUDA dispatch.
#pragma once
#include "checks.h"
#include "cpu/vision.h"
#ifdef WITH_CUDA
#include "cuda/vision.h"
#endif

// input: (N, C, H, W); rois: (K, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.
// Returns (K, C, pooled_height, pooled_width). sampling_ratio 0 means ceil(roi_size / pooled_size).
inline at::Tensor ROIAlign_forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  const char* op = "ROIAlign_forward";
  mrcnn::check_feature_map(input, op);
  mrcnn::check_rois(rois, input, op);
  mrcnn::check_pooled_size(pooled_height, pooled_width, spatial_scale, op);
  TORCH_CHECK(sampling_ratio >= 0, op, ": sampling_ratio must be >= 0 (0 = adaptive), got ", sampling_ratio);
  auto in = input.contiguous();
  auto r = rois.contiguous();
  if (in.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, ROIAlign_forward_cuda(in, r, spatial_scale, pooled_height, pooled_width, sampling_ratio));
  }
  return ROIAlign_forward_cpu(in, r, spatial_scale, pooled_height, pooled_width, sampling_ratio);
}

// grad: (K, C, pooled_height, pooled_width). Returns the gradient of the input, (batch_size, C, H, W).
inline at::Tensor ROIAlign_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                    int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio) {
  const char* op = "ROIAlign_backward";
  mrcnn::check_floating(grad, "grad", op);
  mrcnn::check_rois(rois, grad, op);
  mrcnn::check_pooled_size(pooled_height, pooled_width, spatial_scale, op);
  mrcnn::check_grad_shape(grad, rois.size(0), channels, pooled_height, pooled_width, op);
  TORCH_CHECK(sampling_ratio >= 0, op, ": sampling_ratio must be >= 0 (0 = adaptive), got ", sampling_ratio);
  TORCH_CHECK(batch_size >= 0 && height >= 0 && width >= 0, op, ": input size must be non-negative");
  auto g = grad.contiguous();
  auto r = rois.contiguous();
  if (g.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, ROIAlign_backward_cuda(g, r, spatial_scale, pooled_height, pooled_width, batch_size,
                                                   channels, height, width, sampling_ratio));
  }
  return ROIAlign_backward_cpu(g, r, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                               sampling_ratio);
}
