// ROIPool on CUDA, Caffe / Fast R-CNN semantics (= torchvision.ops.roi_pool): RoI corners are
// rounded after scaling, the RoI spans round(x2) - round(x1) + 1 pixels, and each bin takes the max
// over the pixels it covers (0 with argmax -1 when it covers none).
#include <ATen/ATen.h>
#include <ATen/ceil_div.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/NumericLimits.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "grid.cuh"
#include "vision.h"

namespace {

using mrcnn::grid_size;
using mrcnn::kThreadsPerBlock;

// One thread per output element (k, c, ph, pw). argmax holds the flat h * W + w index of the
// maximum inside the (H, W) input plane.
template <typename T>
__global__ void roi_pool_forward_kernel(int64_t total, const T* __restrict__ input, const T* __restrict__ rois,
                                        T spatial_scale, int64_t batch_size, int64_t channels, int height, int width,
                                        int pooled_height, int pooled_width, T* __restrict__ output,
                                        int64_t* __restrict__ argmax) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = static_cast<int>(index % pooled_width);
    const int ph = static_cast<int>((index / pooled_width) % pooled_height);
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;

    const T* roi = rois + k * 5;
    const int64_t batch_index = static_cast<int64_t>(roi[0]);
    const int roi_start_w = static_cast<int>(round(roi[1] * spatial_scale));
    const int roi_start_h = static_cast<int>(round(roi[2] * spatial_scale));
    const int roi_end_w = static_cast<int>(round(roi[3] * spatial_scale));
    const int roi_end_h = static_cast<int>(round(roi[4] * spatial_scale));
    const int roi_width = max(roi_end_w - roi_start_w + 1, 1);
    const int roi_height = max(roi_end_h - roi_start_h + 1, 1);
    const T bin_h = static_cast<T>(roi_height) / static_cast<T>(pooled_height);
    const T bin_w = static_cast<T>(roi_width) / static_cast<T>(pooled_width);

    int hstart = static_cast<int>(floor(static_cast<T>(ph) * bin_h));
    int wstart = static_cast<int>(floor(static_cast<T>(pw) * bin_w));
    int hend = static_cast<int>(ceil(static_cast<T>(ph + 1) * bin_h));
    int wend = static_cast<int>(ceil(static_cast<T>(pw + 1) * bin_w));
    hstart = min(max(hstart + roi_start_h, 0), height);
    hend = min(max(hend + roi_start_h, 0), height);
    wstart = min(max(wstart + roi_start_w, 0), width);
    wend = min(max(wend + roi_start_w, 0), width);
    // A batch index outside the input has no pixels: treat the bin as empty.
    const bool is_empty = hend <= hstart || wend <= wstart || batch_index < 0 || batch_index >= batch_size;

    T max_value = is_empty ? static_cast<T>(0) : at::numeric_limits<T>::lowest();
    int64_t max_index = -1;
    if (!is_empty) {
      const T* plane = input + (batch_index * channels + c) * height * width;
      for (int h = hstart; h < hend; ++h) {
        for (int w = wstart; w < wend; ++w) {
          const int64_t flat = static_cast<int64_t>(h) * width + w;
          if (plane[flat] > max_value) {
            max_value = plane[flat];
            max_index = flat;
          }
        }
      }
    }
    output[index] = max_value;
    argmax[index] = max_index;
  }
}

// One thread per grad element; routes it to the input pixel that won the max (atomics, since
// bins of overlapping RoIs can share a pixel).
template <typename T>
__global__ void roi_pool_backward_kernel(int64_t total, const T* __restrict__ grad, const T* __restrict__ rois,
                                         const int64_t* __restrict__ argmax, int64_t batch_size, int64_t channels,
                                         int64_t plane_size, int pooled_height, int pooled_width,
                                         T* __restrict__ grad_input) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;
    const int64_t batch_index = static_cast<int64_t>(rois[k * 5]);
    const int64_t max_index = argmax[index];
    if (max_index < 0 || max_index >= plane_size || batch_index < 0 || batch_index >= batch_size) {
      continue;
    }
    gpuAtomicAdd(grad_input + (batch_index * channels + c) * plane_size + max_index, grad[index]);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> ROIPool_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                       double spatial_scale, int64_t pooled_height,
                                                       int64_t pooled_width) {
  at::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  auto argmax = at::full({num_rois, channels, pooled_height, pooled_width}, -1, input.options().dtype(at::kLong));
  const int64_t total = output.numel();
  if (total == 0 || input.numel() == 0) {
    return std::make_tuple(output, argmax);
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "ROIPool_forward_cuda", [&] {
    roi_pool_forward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), static_cast<scalar_t>(spatial_scale),
        input.size(0), channels, static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
        static_cast<int>(pooled_height), static_cast<int>(pooled_width), output.data_ptr<scalar_t>(),
        argmax.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return std::make_tuple(output, argmax);
}

at::Tensor ROIPool_backward_cuda(const at::Tensor& grad, const at::Tensor& /*input*/, const at::Tensor& rois,
                                const at::Tensor& argmax, double /*spatial_scale*/, int64_t pooled_height,
                                int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                                int64_t width) {
  at::cuda::CUDAGuard device_guard(grad.device());
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  const int64_t total = grad.numel();
  if (total == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "ROIPool_backward_cuda", [&] {
    roi_pool_backward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), argmax.data_ptr<int64_t>(), batch_size,
        channels, height * width, static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        grad_input.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}
