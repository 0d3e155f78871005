// CPU kernels of maskrcnn_benchmark._C. Inputs are validated by the dispatch headers in csrc/.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

at::Tensor ROIAlign_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio);

at::Tensor ROIAlign_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio);

std::tuple<at::Tensor, at::Tensor> ROIPool_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                       double spatial_scale, int64_t pooled_height,
                                                       int64_t pooled_width);

at::Tensor ROIPool_backward_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                const at::Tensor& argmax, double spatial_scale, int64_t pooled_height,
                                int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                                int64_t width);

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double threshold);

at::Tensor batched_nms_cpu(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                           double threshold);

at::Tensor SigmoidFocalLoss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t num_classes,
                                        double gamma, double alpha);

at::Tensor SigmoidFocalLoss_backward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                         const at::Tensor& d_losses, int64_t num_classes, double gamma,
                                         double alpha);
