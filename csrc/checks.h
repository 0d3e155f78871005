// Input validation shared by the dispatch headers: a clear error instead of a crash or garbage.
#pragma once
#include <torch/extension.h>

namespace mrcnn {

inline void check_floating(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                              const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device(), " but ", b_name, " is on ",
              b.device(), "; move both to the same device");
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                             const char* op) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " is ", a.scalar_type(), " but ", b_name,
              " is ", b.scalar_type(), "; cast both to the same dtype");
}

inline void check_feature_map(const at::Tensor& input, const char* op) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be a (N, C, H, W) feature map, got shape ", input.sizes());
  check_floating(input, "input", op);
}

inline void check_rois(const at::Tensor& rois, const at::Tensor& input, const char* op) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must have shape (K, 5) with rows [batch_index, x1, y1, x2, y2], got shape ", rois.sizes());
  check_same_device(input, "input", rois, "rois", op);
  check_same_dtype(input, "input", rois, "rois", op);
}

inline void check_pooled_size(int64_t pooled_height, int64_t pooled_width, double spatial_scale, const char* op) {
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": output size must be positive, got (", pooled_height,
              ", ", pooled_width, ")");
  TORCH_CHECK(spatial_scale > 0, op, ": spatial_scale must be positive, got ", spatial_scale);
}

inline void check_grad_shape(const at::Tensor& grad, int64_t num_rois, int64_t channels, int64_t pooled_height,
                             int64_t pooled_width, const char* op) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must have shape (", num_rois, ", ", channels, ", ", pooled_height, ", ", pooled_width,
              "), got ", grad.sizes());
}

}  // namespace mrcnn

#ifdef WITH_CUDA
#define MRCNN_DISPATCH_CUDA(op, call) return call
#else
#define MRCNN_DISPATCH_CUDA(op, call) \
  TORCH_CHECK(false, op, ": maskrcnn_benchmark._C was built without CUDA support; rebuild with FORCE_CUDA=1 (INSTALL.md)")
#endif
