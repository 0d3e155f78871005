// ROIPool (Fast R-CNN: rounded RoI corners, +1 extent), CPU and CUDA dispatch.
#pragma once
#include "checks.h"
#include "cpu/vision.h"
#ifdef WITH_CUDA
#include "cuda/vision.h"
#endif

// input: (N, C, H, W); rois: (K, 5). Returns (output, argmax), both (K, C, pooled_height, pooled_width);
// argmax (int64) holds the flat h * W + w index of the maximum inside the input plane, -1 for empty bins.
inline std::tuple<at::Tensor, at::Tensor> ROIPool_forward(const at::Tensor& input, const at::Tensor& rois,
                                                          double spatial_scale, int64_t pooled_height,
                                                          int64_t pooled_width) {
  const char* op = "ROIPool_forward";
  mrcnn::check_feature_map(input, op);
  mrcnn::check_rois(rois, input, op);
  mrcnn::check_pooled_size(pooled_height, pooled_width, spatial_scale, op);
  auto in = input.contiguous();
  auto r = rois.contiguous();
  if (in.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, ROIPool_forward_cuda(in, r, spatial_scale, pooled_height, pooled_width));
  }
  return ROIPool_forward_cpu(in, r, spatial_scale, pooled_height, pooled_width);
}

// grad: (K, C, pooled_height, pooled_width). Returns the gradient of the input, (batch_size, C, H, W).
inline at::Tensor ROIPool_backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                   const at::Tensor& argmax, double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                                   int64_t width) {
  const char* op = "ROIPool_backward";
  mrcnn::check_floating(grad, "grad", op);
  mrcnn::check_rois(rois, grad, op);
  mrcnn::check_pooled_size(pooled_height, pooled_width, spatial_scale, op);
  mrcnn::check_grad_shape(grad, rois.size(0), channels, pooled_height, pooled_width, op);
  TORCH_CHECK(argmax.sizes() == grad.sizes(), op, ": argmax must have the shape of grad ", grad.sizes(), ", got ",
              argmax.sizes());
  TORCH_CHECK(argmax.scalar_type() == at::kLong, op, ": argmax must be int64, got ", argmax.scalar_type());
  mrcnn::check_same_device(grad, "grad", argmax, "argmax", op);
  auto g = grad.contiguous();
  auto r = rois.contiguous();
  auto a = argmax.contiguous();
  if (g.is_cuda()) {
    MRCNN_DISPATCH_CUDA(op, ROIPool_backward_cuda(g, input, r, a, spatial_scale, pooled_height, pooled_width,
                                                  batch_size, channels, height, width));
  }
  return ROIPool_backward_cpu(g, input, r, a, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                              width);
}
