// ROIAlign on CUDA, Detectron v1 semantics (= torchvision.ops.roi_align(..., aligned=False)):
// RoI corners are scaled by spatial_scale with no half-pixel shift, the RoI size is clamped to >= 1,
// and each output bin averages a grid of bilinear samples placed at (i + 0.5) / grid inside the bin.
#include <ATen/ATen.h>
#include <ATen/ceil_div.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "grid.cuh"
#include "vision.h"

namespace {

using mrcnn::grid_size;
using mrcnn::kThreadsPerBlock;

// The RoI geometry shared by forward and backward, in feature-map pixels.
template <typename T>
struct RoiGeometry {
  int64_t batch_index;
  T start_h;
  T start_w;
  T bin_h;
  T bin_w;
  int grid_h;
  int grid_w;
};

template <typename T>
__device__ RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int pooled_height, int pooled_width,
                                       int sampling_ratio) {
  RoiGeometry<T> g;
  g.batch_index = static_cast<int64_t>(roi[0]);
  g.start_w = roi[1] * spatial_scale;
  g.start_h = roi[2] * spatial_scale;
  const T end_w = roi[3] * spatial_scale;
  const T end_h = roi[4] * spatial_scale;
  const T roi_width = max(end_w - g.start_w, static_cast<T>(1));
  const T roi_height = max(end_h - g.start_h, static_cast<T>(1));
  g.bin_h = roi_height / static_cast<T>(pooled_height);
  g.bin_w = roi_width / static_cast<T>(pooled_width);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_height / pooled_height));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_width / pooled_width));
  return g;
}

// Bilinear interpolation weights of the sample (y, x) over its four neighbours.
// Returns false (no contribution) for samples more than one pixel outside the map.
template <typename T>
__device__ bool bilinear_weights(int height, int width, T y, T x, int& y_low, int& x_low, int& y_high, int& x_high,
                                 T& w_ll, T& w_lh, T& w_hl, T& w_hh) {
  if (y < static_cast<T>(-1) || y > static_cast<T>(height) || x < static_cast<T>(-1) || x > static_cast<T>(width)) {
    return false;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  y_low = static_cast<int>(y);
  x_low = static_cast<int>(x);
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - y_low;
  const T lx = x - x_low;
  const T hy = static_cast<T>(1) - ly;
  const T hx = static_cast<T>(1) - lx;
  w_ll = hy * hx;
  w_lh = hy * lx;
  w_hl = ly * hx;
  w_hh = ly * lx;
  return true;
}

// One thread per output element (k, c, ph, pw); output is (K, C, pooled_height, pooled_width).
template <typename T>
__global__ void roi_align_forward_kernel(int64_t total, const T* __restrict__ input, const T* __restrict__ rois,
                                         T spatial_scale, int64_t batch_size, int64_t channels, int height, int width,
                                         int pooled_height, int pooled_width, int sampling_ratio,
                                         T* __restrict__ output) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = static_cast<int>(index % pooled_width);
    const int ph = static_cast<int>((index / pooled_width) % pooled_height);
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;

    const RoiGeometry<T> g = roi_geometry(rois + k * 5, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    // A batch index outside the input has no pixels to sample: the bin stays 0.
    if (g.batch_index < 0 || g.batch_index >= batch_size) {
      output[index] = 0;
      continue;
    }
    const T* plane = input + (g.batch_index * channels + c) * height * width;

    T sum = 0;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.start_h + ph * g.bin_h + static_cast<T>(iy + .5f) * g.bin_h / static_cast<T>(g.grid_h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const T x = g.start_w + pw * g.bin_w + static_cast<T>(ix + .5f) * g.bin_w / static_cast<T>(g.grid_w);
        int y_low, x_low, y_high, x_high;
        T w_ll, w_lh, w_hl, w_hh;
        if (bilinear_weights(height, width, y, x, y_low, x_low, y_high, x_high, w_ll, w_lh, w_hl, w_hh)) {
          sum += w_ll * plane[y_low * width + x_low] + w_lh * plane[y_low * width + x_high] +
                 w_hl * plane[y_high * width + x_low] + w_hh * plane[y_high * width + x_high];
        }
      }
    }
    const int count = max(g.grid_h * g.grid_w, 1);
    output[index] = sum / static_cast<T>(count);
  }
}

// One thread per grad element; scatters into grad_input (batch_size, C, H, W) with atomics.
template <typename T>
__global__ void roi_align_backward_kernel(int64_t total, const T* __restrict__ grad, const T* __restrict__ rois,
                                          T spatial_scale, int64_t batch_size, int64_t channels, int height,
                                          int width, int pooled_height, int pooled_width, int sampling_ratio,
                                          T* __restrict__ grad_input) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = static_cast<int>(index % pooled_width);
    const int ph = static_cast<int>((index / pooled_width) % pooled_height);
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;

    const RoiGeometry<T> g = roi_geometry(rois + k * 5, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    if (g.batch_index < 0 || g.batch_index >= batch_size) {
      continue;
    }
    T* plane = grad_input + (g.batch_index * channels + c) * height * width;
    const int count = max(g.grid_h * g.grid_w, 1);
    const T grad_per_sample = grad[index] / static_cast<T>(count);

    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.start_h + ph * g.bin_h + static_cast<T>(iy + .5f) * g.bin_h / static_cast<T>(g.grid_h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const T x = g.start_w + pw * g.bin_w + static_cast<T>(ix + .5f) * g.bin_w / static_cast<T>(g.grid_w);
        int y_low, x_low, y_high, x_high;
        T w_ll, w_lh, w_hl, w_hh;
        if (bilinear_weights(height, width, y, x, y_low, x_low, y_high, x_high, w_ll, w_lh, w_hl, w_hh)) {
          gpuAtomicAdd(plane + y_low * width + x_low, grad_per_sample * w_ll);
          gpuAtomicAdd(plane + y_low * width + x_high, grad_per_sample * w_lh);
          gpuAtomicAdd(plane + y_high * width + x_low, grad_per_sample * w_hl);
          gpuAtomicAdd(plane + y_high * width + x_high, grad_per_sample * w_hh);
        }
      }
    }
  }
}

}  // namespace

at::Tensor ROIAlign_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  at::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  const int64_t total = output.numel();
  if (total == 0 || input.numel() == 0) {
    return output;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "ROIAlign_forward_cuda", [&] {
    roi_align_forward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), static_cast<scalar_t>(spatial_scale),
        input.size(0), channels, static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
        static_cast<int>(pooled_height), static_cast<int>(pooled_width), static_cast<int>(sampling_ratio),
        output.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor ROIAlign_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio) {
  at::cuda::CUDAGuard device_guard(grad.device());
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  const int64_t total = grad.numel();
  if (total == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "ROIAlign_backward_cuda", [&] {
    roi_align_backward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), static_cast<scalar_t>(spatial_scale),
        batch_size, channels, static_cast<int>(height), static_cast<int>(width), static_cast<int>(pooled_height),
        static_cast<int>(pooled_width), static_cast<int>(sampling_ratio), grad_input.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}
