// ROIPool on the CPU, Fast R-CNN semantics: torchvision.ops.roi_pool.
//
// RoI corners are scaled and rounded to pixels, the RoI spans end - start + 1 pixels (at least 1), and bin p covers
// pixels [floor(p * bin_size), ceil((p + 1) * bin_size)) from the RoI start, clipped to the feature map. A bin's
// output is its maximum (0 for an empty bin) and its argmax the flat h * width + w index of that maximum in the plane
// (-1 for an empty bin). Bin windows are computed once per RoI; forward and backward run in parallel over
// (image, channel) planes, so the backward accumulates without races.
#include "cpu/rois_by_image.h"
#include "cpu/vision.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// Pixels [begin, end) of one bin along one axis.
struct PixelRange {
  int64_t begin;
  int64_t end;
};

// Scaled and rounded RoI corner. Absurd coordinates are clamped first so that the integer conversion is defined;
// every clamped value still lies far outside any feature map.
template <typename T>
int64_t rounded_corner(T coordinate, T scale) {
  const T limit = static_cast<T>(int64_t(1) << 40);
  return static_cast<int64_t>(std::round(std::min(std::max(coordinate * scale, -limit), limit)));
}

// Appends the ranges of the `pooled` bins of one RoI along an axis of `size` pixels.
template <typename T>
void append_axis_ranges(int64_t roi_start, int64_t roi_end, int64_t pooled, int64_t size,
                        std::vector<PixelRange>& ranges) {
  const int64_t roi_size = std::max(roi_end - roi_start + 1, int64_t(1));
  const T bin_size = static_cast<T>(roi_size) / static_cast<T>(pooled);
  for (int64_t p = 0; p < pooled; ++p) {
    const int64_t begin = static_cast<int64_t>(std::floor(static_cast<T>(p) * bin_size));
    const int64_t end = static_cast<int64_t>(std::ceil(static_cast<T>(p + 1) * bin_size));
    ranges.push_back({std::min(std::max(begin + roi_start, int64_t(0)), size),
                      std::min(std::max(end + roi_start, int64_t(0)), size)});
  }
}

// Bin ranges of every RoI along y (num_rois * pooled_height) and x (num_rois * pooled_width).
struct RoIPoolBins {
  std::vector<PixelRange> y_bins;
  std::vector<PixelRange> x_bins;
};

template <typename T>
RoIPoolBins compute_bins(const at::Tensor& rois, double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                         int64_t height, int64_t width) {
  const int64_t num_rois = rois.size(0);
  RoIPoolBins bins;
  bins.y_bins.reserve(num_rois * pooled_height);
  bins.x_bins.reserve(num_rois * pooled_width);
  const T scale = static_cast<T>(spatial_scale);
  const T* roi_data = rois.data_ptr<T>();
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* roi = roi_data + k * 5;
    append_axis_ranges<T>(rounded_corner(roi[2], scale), rounded_corner(roi[4], scale), pooled_height, height,
                          bins.y_bins);
    append_axis_ranges<T>(rounded_corner(roi[1], scale), rounded_corner(roi[3], scale), pooled_width, width,
                          bins.x_bins);
  }
  return bins;
}

// Max-pools RoI k from one (height, width) plane into out and argmax, both (pooled_height, pooled_width).
template <typename T>
void max_pool_plane(const T* plane, int64_t width, const RoIPoolBins& bins, int64_t k, int64_t pooled_height,
                    int64_t pooled_width, T* out, int64_t* argmax) {
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const PixelRange& rows = bins.y_bins[k * pooled_height + ph];
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const PixelRange& cols = bins.x_bins[k * pooled_width + pw];
      const bool empty = rows.end <= rows.begin || cols.end <= cols.begin;
      T max_value = empty ? T(0) : std::numeric_limits<T>::lowest();
      int64_t max_index = -1;
      for (int64_t h = rows.begin; h < rows.end; ++h) {
        for (int64_t w = cols.begin; w < cols.end; ++w) {
          const int64_t index = h * width + w;
          if (plane[index] > max_value) {
            max_value = plane[index];
            max_index = index;
          }
        }
      }
      out[ph * pooled_width + pw] = max_value;
      argmax[ph * pooled_width + pw] = max_index;
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> ROIPool_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                       double spatial_scale, int64_t pooled_height,
                                                       int64_t pooled_width) {
  TORCH_CHECK(input.device().is_cpu(), "ROIPool_forward: tensors on ", input.device(),
              " are not supported; use CPU or CUDA tensors");
  const int64_t num_images = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t height = input.size(2);
  const int64_t width = input.size(3);
  const auto rois_of_image = mrcnn::group_rois_by_image(rois, num_images, "ROIPool_forward");
  auto output = at::empty({rois.size(0), channels, pooled_height, pooled_width}, input.options());
  auto argmax = at::empty({rois.size(0), channels, pooled_height, pooled_width}, input.options().dtype(at::kLong));
  if (output.numel() == 0) {
    return std::make_tuple(output, argmax);
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "ROIPool_forward_cpu", [&] {
    const auto bins = compute_bins<scalar_t>(rois, spatial_scale, pooled_height, pooled_width, height, width);
    const scalar_t* input_data = input.data_ptr<scalar_t>();
    scalar_t* output_data = output.data_ptr<scalar_t>();
    int64_t* argmax_data = argmax.data_ptr<int64_t>();
    const int64_t pooled = pooled_height * pooled_width;
    at::parallel_for(0, num_images * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % channels;
        const scalar_t* plane_data = input_data + plane * height * width;
        for (const int64_t k : rois_of_image[plane / channels]) {
          const int64_t offset = (k * channels + c) * pooled;
          max_pool_plane(plane_data, width, bins, k, pooled_height, pooled_width, output_data + offset,
                         argmax_data + offset);
        }
      }
    });
  });
  return std::make_tuple(output, argmax);
}

// input and spatial_scale belong to upstream's signature; argmax already locates the maximum of every bin.
at::Tensor ROIPool_backward_cpu(const at::Tensor& grad, const at::Tensor& /*input*/, const at::Tensor& rois,
                                const at::Tensor& argmax, double /*spatial_scale*/, int64_t pooled_height,
                                int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                                int64_t width) {
  TORCH_CHECK(grad.device().is_cpu(), "ROIPool_backward: tensors on ", grad.device(),
              " are not supported; use CPU or CUDA tensors");
  const auto rois_of_image = mrcnn::group_rois_by_image(rois, batch_size, "ROIPool_backward");
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0) {
    return grad_input;
  }
  const int64_t plane_size = height * width;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "ROIPool_backward_cpu", [&] {
    const scalar_t* grad_data = grad.data_ptr<scalar_t>();
    const int64_t* argmax_data = argmax.data_ptr<int64_t>();
    scalar_t* grad_input_data = grad_input.data_ptr<scalar_t>();
    const int64_t pooled = pooled_height * pooled_width;
    at::parallel_for(0, batch_size * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % channels;
        scalar_t* plane_data = grad_input_data + plane * plane_size;
        for (const int64_t k : rois_of_image[plane / channels]) {
          const int64_t offset = (k * channels + c) * pooled;
          for (int64_t bin = 0; bin < pooled; ++bin) {
            const int64_t index = argmax_data[offset + bin];
            TORCH_CHECK(index >= -1 && index < plane_size, "ROIPool_backward: argmax holds ", index,
                        ", which is not -1 or a pixel index of a ", height, " x ", width,
                        " plane; pass the argmax returned by ROIPool_forward for this input");
            if (index >= 0) {
              plane_data[index] += grad_data[offset + bin];
            }
          }
        }
      }
    });
  });
  return grad_input;
}
