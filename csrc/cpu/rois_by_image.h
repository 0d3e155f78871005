// Validation and grouping of RoIs by image, shared by the CPU RoI kernels.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace mrcnn {

// rois: contiguous (K, 5) [batch_index, x1, y1, x2, y2]. Checks that every coordinate is finite and every batch
// index lies in [0, num_images), then returns, per image, the indices of its RoIs in ascending order.
inline std::vector<std::vector<int64_t>> group_rois_by_image(const at::Tensor& rois, int64_t num_images,
                                                             const char* op) {
  std::vector<std::vector<int64_t>> rois_of_image(num_images);
  AT_DISPATCH_FLOATING_TYPES(rois.scalar_type(), "group_rois_by_image", [&] {
    const scalar_t* data = rois.data_ptr<scalar_t>();
    for (int64_t k = 0; k < rois.size(0); ++k) {
      const scalar_t* roi = data + k * 5;
      for (int i = 0; i < 5; ++i) {
        TORCH_CHECK(std::isfinite(static_cast<double>(roi[i])), op, ": rois[", k, "] = [", roi[0], ", ", roi[1], ", ",
                    roi[2], ", ", roi[3], ", ", roi[4], "] holds a non-finite value");
      }
      TORCH_CHECK(roi[0] >= 0 && roi[0] < static_cast<scalar_t>(num_images), op, ": rois[", k, ", 0] = ", roi[0],
                  " is not a valid batch index for a batch of ", num_images, " images (expected 0 <= index < ",
                  num_images, ")");
      rois_of_image[static_cast<int64_t>(roi[0])].push_back(k);
    }
  });
  return rois_of_image;
}

}  // namespace mrcnn
