// ROIAlign on the CPU, Detectron (v1) semantics: torchvision.ops.roi_align(..., aligned=False).
//
// Bilinear interpolation is separable, so the value of one bin is
//     sum_y wy(y) * sum_x wx(x) * input[y, x],
// where wy adds up, over the bin's sampling rows, the two bilinear weights of every sample (divided by the grid
// height), and wx does the same along x. These per-axis taps (pixel, weight) are computed once per RoI, with samples
// that share a pixel merged, and reused for every channel. All bins of one RoI get the same number of taps per axis
// (padded with zero weights), so the inner loops have a fixed trip count, set at compile time for the common counts.
// Forward and backward both run in parallel over blocks of a few channels of one image, which share every tap's
// offset and weight; in the backward each plane of the input gradient is thus written by one thread only.
#include "cpu/rois_by_image.h"
#include "cpu/vision.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// One bilinear sample on an axis of `size` pixels: weight w_low on pixel low, w_high on pixel high.
template <typename T>
struct AxisSample {
  int64_t low;
  int64_t high;
  T w_low;
  T w_high;
};

// Detectron's bilinear taps of `coord` on an axis of `size` > 0 pixels. Returns false when the sample lies outside
// [-1, size] and contributes nothing.
template <typename T>
bool bilinear_sample(T coord, int64_t size, AxisSample<T>& sample) {
  if (!(coord >= T(-1) && coord <= static_cast<T>(size))) {
    return false;
  }
  if (coord <= 0) {
    coord = 0;
  }
  sample.low = static_cast<int64_t>(coord);
  if (sample.low >= size - 1) {
    sample.low = sample.high = size - 1;
    coord = static_cast<T>(sample.low);
  } else {
    sample.high = sample.low + 1;
  }
  const T frac = coord - static_cast<T>(sample.low);
  sample.w_low = T(1) - frac;
  sample.w_high = frac;
  return true;
}

// Where the taps of one RoI along one axis live: bin p owns entries [offset + p * taps_per_bin, ... + taps_per_bin)
// of the axis's pixel and weight arrays.
struct AxisTaps {
  int64_t offset;
  int64_t taps_per_bin;
};

// Taps of one axis for all RoIs. A pixel entry is the offset of the pixel in the plane (row * width for y).
template <typename T>
struct AxisTapTable {
  std::vector<AxisTaps> rois;
  std::vector<int64_t> pixel;
  std::vector<T> weight;

  // Appends the taps of the `pooled` bins of one RoI. The RoI starts at `roi_start` (feature-map pixels), each bin
  // spans `bin_size` pixels sampled at `grid` points (each weighing 1 / grid), the axis has `size` pixels and
  // consecutive pixels lie `stride` elements apart.
  void append_roi(T roi_start, T bin_size, int64_t pooled, int64_t grid, int64_t size, int64_t stride) {
    const T sample_weight = T(1) / static_cast<T>(grid);
    const int64_t capacity = std::min(2 * grid, size);  // distinct pixels a bin can touch
    std::vector<int64_t> bin_pixel(pooled * capacity);
    std::vector<T> bin_weight(pooled * capacity);
    std::vector<int64_t> bin_taps(pooled, 0);
    const auto add_tap = [&](int64_t p, int64_t pix, T w) {
      int64_t* pixels = bin_pixel.data() + p * capacity;
      T* weights = bin_weight.data() + p * capacity;
      for (int64_t t = bin_taps[p] - 1; t >= 0; --t) {
        if (pixels[t] == pix) {
          weights[t] += w;
          return;
        }
      }
      pixels[bin_taps[p]] = pix;
      weights[bin_taps[p]] = w;
      ++bin_taps[p];
    };
    for (int64_t p = 0; p < pooled; ++p) {
      for (int64_t i = 0; i < grid; ++i) {
        const T coord = roi_start + static_cast<T>(p) * bin_size +
                        static_cast<T>(i + .5f) * bin_size / static_cast<T>(grid);
        AxisSample<T> sample;
        if (bilinear_sample(coord, size, sample)) {
          add_tap(p, sample.low, sample.w_low * sample_weight);
          add_tap(p, sample.high, sample.w_high * sample_weight);
        }
      }
    }
    const int64_t taps_per_bin = *std::max_element(bin_taps.begin(), bin_taps.end());
    rois.push_back({static_cast<int64_t>(pixel.size()), taps_per_bin});
    for (int64_t p = 0; p < pooled; ++p) {
      for (int64_t t = 0; t < taps_per_bin; ++t) {
        const bool real = t < bin_taps[p];
        pixel.push_back(real ? bin_pixel[p * capacity + t] * stride : 0);
        weight.push_back(real ? bin_weight[p * capacity + t] : T(0));
      }
    }
  }
};

template <typename T>
struct RoIAlignTaps {
  AxisTapTable<T> y;
  AxisTapTable<T> x;
};

// Largest adaptive sampling grid per bin axis (sampling_ratio 0): beyond it a RoI is absurdly large.
constexpr double kMaxAdaptiveGrid = 1 << 20;

// Taps of every RoI. rois: contiguous (K, 5); the feature map is height x width.
template <typename T>
RoIAlignTaps<T> compute_taps(const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, int64_t height, int64_t width, int64_t sampling_ratio) {
  const int64_t num_rois = rois.size(0);
  RoIAlignTaps<T> taps;
  taps.y.rois.reserve(num_rois);
  taps.x.rois.reserve(num_rois);
  const T scale = static_cast<T>(spatial_scale);
  const T* roi_data = rois.data_ptr<T>();
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* roi = roi_data + k * 5;
    const T roi_start_w = roi[1] * scale;
    const T roi_start_h = roi[2] * scale;
    const T roi_end_w = roi[3] * scale;
    const T roi_end_h = roi[4] * scale;
    const T roi_width = std::max(roi_end_w - roi_start_w, T(1));
    const T roi_height = std::max(roi_end_h - roi_start_h, T(1));
    const T bin_size_h = roi_height / static_cast<T>(pooled_height);
    const T bin_size_w = roi_width / static_cast<T>(pooled_width);
    const T adaptive_grid_h = std::ceil(roi_height / pooled_height);
    const T adaptive_grid_w = std::ceil(roi_width / pooled_width);
    TORCH_CHECK(sampling_ratio > 0 || std::max(adaptive_grid_h, adaptive_grid_w) <= kMaxAdaptiveGrid,
                "ROIAlign: rois[", k, "] spans ", roi_width, " x ", roi_height,
                " feature-map pixels, too many for adaptive sampling (sampling_ratio 0); check its coordinates and "
                "spatial_scale, or set a positive sampling_ratio");
    const int64_t grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(adaptive_grid_h);
    const int64_t grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(adaptive_grid_w);
    taps.y.append_roi(roi_start_h, bin_size_h, pooled_height, grid_h, height, width);
    taps.x.append_roi(roi_start_w, bin_size_w, pooled_width, grid_w, width, 1);
  }
  return taps;
}

// Pools RoI k from kChannels consecutive planes (plane_size elements apart) into out, kChannels consecutive
// (pooled_height, pooled_width) maps. Several channels share each tap's pixel offset and weight. kXTaps > 0 fixes the
// number of x taps per bin at compile time (it must equal the RoI's); 0 reads it at run time.
template <int kChannels, int kXTaps, typename T>
void pool_planes(const T* planes, int64_t plane_size, const RoIAlignTaps<T>& taps, int64_t k, int64_t pooled_height,
                 int64_t pooled_width, T* out) {
  const AxisTaps ya = taps.y.rois[k];
  const AxisTaps xa = taps.x.rois[k];
  const int64_t x_taps = kXTaps > 0 ? kXTaps : xa.taps_per_bin;
  const int64_t bins = pooled_height * pooled_width;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const int64_t* y_pixel = taps.y.pixel.data() + ya.offset + ph * ya.taps_per_bin;
    const T* y_weight = taps.y.weight.data() + ya.offset + ph * ya.taps_per_bin;
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const int64_t* x_pixel = taps.x.pixel.data() + xa.offset + pw * x_taps;
      const T* x_weight = taps.x.weight.data() + xa.offset + pw * x_taps;
      T value[kChannels] = {};
      for (int64_t i = 0; i < ya.taps_per_bin; ++i) {
        const T* row = planes + y_pixel[i];
        T row_value[kChannels] = {};
        for (int64_t j = 0; j < x_taps; ++j) {
          const T* pixel = row + x_pixel[j];
          const T w = x_weight[j];
          for (int c = 0; c < kChannels; ++c) {
            row_value[c] += w * pixel[c * plane_size];
          }
        }
        for (int c = 0; c < kChannels; ++c) {
          value[c] += y_weight[i] * row_value[c];
        }
      }
      for (int c = 0; c < kChannels; ++c) {
        out[c * bins + ph * pooled_width + pw] = value[c];
      }
    }
  }
}

template <int kChannels, typename T>
void pool_planes_dispatch(const T* planes, int64_t plane_size, const RoIAlignTaps<T>& taps, int64_t k,
                          int64_t pooled_height, int64_t pooled_width, T* out) {
  switch (taps.x.rois[k].taps_per_bin) {
    case 2:
      return pool_planes<kChannels, 2>(planes, plane_size, taps, k, pooled_height, pooled_width, out);
    case 3:
      return pool_planes<kChannels, 3>(planes, plane_size, taps, k, pooled_height, pooled_width, out);
    case 4:
      return pool_planes<kChannels, 4>(planes, plane_size, taps, k, pooled_height, pooled_width, out);
    default:
      return pool_planes<kChannels, 0>(planes, plane_size, taps, k, pooled_height, pooled_width, out);
  }
}

// Adds the gradient of RoI k, kChannels consecutive (pooled_height, pooled_width) maps, into kChannels consecutive
// planes (plane_size elements apart). kXTaps as in pool_planes.
template <int kChannels, int kXTaps, typename T>
void unpool_planes(const T* grad, const RoIAlignTaps<T>& taps, int64_t k, int64_t pooled_height, int64_t pooled_width,
                   int64_t plane_size, T* planes) {
  const AxisTaps ya = taps.y.rois[k];
  const AxisTaps xa = taps.x.rois[k];
  const int64_t x_taps = kXTaps > 0 ? kXTaps : xa.taps_per_bin;
  const int64_t bins = pooled_height * pooled_width;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const int64_t* y_pixel = taps.y.pixel.data() + ya.offset + ph * ya.taps_per_bin;
    const T* y_weight = taps.y.weight.data() + ya.offset + ph * ya.taps_per_bin;
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const int64_t* x_pixel = taps.x.pixel.data() + xa.offset + pw * x_taps;
      const T* x_weight = taps.x.weight.data() + xa.offset + pw * x_taps;
      T g[kChannels];
      for (int c = 0; c < kChannels; ++c) {
        g[c] = grad[c * bins + ph * pooled_width + pw];
      }
      for (int64_t i = 0; i < ya.taps_per_bin; ++i) {
        T* row = planes + y_pixel[i];
        T row_grad[kChannels];
        for (int c = 0; c < kChannels; ++c) {
          row_grad[c] = g[c] * y_weight[i];
        }
        for (int64_t j = 0; j < x_taps; ++j) {
          T* pixel = row + x_pixel[j];
          const T w = x_weight[j];
          for (int c = 0; c < kChannels; ++c) {
            pixel[c * plane_size] += row_grad[c] * w;
          }
        }
      }
    }
  }
}

template <int kChannels, typename T>
void unpool_planes_dispatch(const T* grad, const RoIAlignTaps<T>& taps, int64_t k, int64_t pooled_height,
                            int64_t pooled_width, int64_t plane_size, T* planes) {
  switch (taps.x.rois[k].taps_per_bin) {
    case 2:
      return unpool_planes<kChannels, 2>(grad, taps, k, pooled_height, pooled_width, plane_size, planes);
    case 3:
      return unpool_planes<kChannels, 3>(grad, taps, k, pooled_height, pooled_width, plane_size, planes);
    case 4:
      return unpool_planes<kChannels, 4>(grad, taps, k, pooled_height, pooled_width, plane_size, planes);
    default:
      return unpool_planes<kChannels, 0>(grad, taps, k, pooled_height, pooled_width, plane_size, planes);
  }
}

// Channels processed together by one task; the planes of one image are split into blocks of this many channels.
constexpr int kChannelBlock = 4;

// Calls fn(image, first_channel, num_channels) for every block of at most kChannelBlock channels, in parallel.
template <typename Fn>
void for_each_channel_block(int64_t num_images, int64_t channels, Fn fn) {
  const int64_t blocks_per_image = (channels + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, num_images * blocks_per_image, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first_channel = (block % blocks_per_image) * kChannelBlock;
      fn(block / blocks_per_image, first_channel, std::min<int64_t>(kChannelBlock, channels - first_channel));
    }
  });
}

}  // namespace

at::Tensor ROIAlign_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  TORCH_CHECK(input.device().is_cpu(), "ROIAlign_forward: tensors on ", input.device(),
              " are not supported; use CPU or CUDA tensors");
  const int64_t num_images = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t height = input.size(2);
  const int64_t width = input.size(3);
  const auto rois_of_image = mrcnn::group_rois_by_image(rois, num_images, "ROIAlign_forward");
  if (rois.size(0) == 0 || channels == 0 || height == 0 || width == 0) {
    return at::zeros({rois.size(0), channels, pooled_height, pooled_width}, input.options());
  }
  auto output = at::empty({rois.size(0), channels, pooled_height, pooled_width}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "ROIAlign_forward_cpu", [&] {
    const auto taps =
        compute_taps<scalar_t>(rois, spatial_scale, pooled_height, pooled_width, height, width, sampling_ratio);
    const scalar_t* input_data = input.data_ptr<scalar_t>();
    scalar_t* output_data = output.data_ptr<scalar_t>();
    const int64_t bins = pooled_height * pooled_width;
    const int64_t plane_size = height * width;
    for_each_channel_block(num_images, channels, [&](int64_t image, int64_t first_channel, int64_t num_channels) {
      const scalar_t* planes = input_data + (image * channels + first_channel) * plane_size;
      for (const int64_t k : rois_of_image[image]) {
        scalar_t* out = output_data + (k * channels + first_channel) * bins;
        if (num_channels == kChannelBlock) {
          pool_planes_dispatch<kChannelBlock>(planes, plane_size, taps, k, pooled_height, pooled_width, out);
        } else {
          for (int64_t c = 0; c < num_channels; ++c) {
            pool_planes_dispatch<1>(planes + c * plane_size, plane_size, taps, k, pooled_height, pooled_width,
                                    out + c * bins);
          }
        }
      }
    });
  });
  return output;
}

at::Tensor ROIAlign_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                                 int64_t height, int64_t width, int64_t sampling_ratio) {
  TORCH_CHECK(grad.device().is_cpu(), "ROIAlign_backward: tensors on ", grad.device(),
              " are not supported; use CPU or CUDA tensors");
  const auto rois_of_image = mrcnn::group_rois_by_image(rois, batch_size, "ROIAlign_backward");
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "ROIAlign_backward_cpu", [&] {
    const auto taps =
        compute_taps<scalar_t>(rois, spatial_scale, pooled_height, pooled_width, height, width, sampling_ratio);
    const scalar_t* grad_data = grad.data_ptr<scalar_t>();
    scalar_t* grad_input_data = grad_input.data_ptr<scalar_t>();
    const int64_t bins = pooled_height * pooled_width;
    const int64_t plane_size = height * width;
    for_each_channel_block(batch_size, channels, [&](int64_t image, int64_t first_channel, int64_t num_channels) {
      scalar_t* planes = grad_input_data + (image * channels + first_channel) * plane_size;
      for (const int64_t k : rois_of_image[image]) {
        const scalar_t* g = grad_data + (k * channels + first_channel) * bins;
        if (num_channels == kChannelBlock) {
          unpool_planes_dispatch<kChannelBlock>(g, taps, k, pooled_height, pooled_width, plane_size, planes);
        } else {
          for (int64_t c = 0; c < num_channels; ++c) {
            unpool_planes_dispatch<1>(g + c * bins, taps, k, pooled_height, pooled_width, plane_size,
                                      planes + c * plane_size);
          }
        }
      }
    });
  });
  return grad_input;
}
