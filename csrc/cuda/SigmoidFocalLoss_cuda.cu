// Sigmoid focal loss (RetinaNet) on CUDA, element-wise over (N, C) logits.
// targets[n] = 0 is background, t in 1..C makes column t - 1 positive, t < 0 is ignored (zero loss
// and gradient). With p = sigmoid(x): positives give -alpha (1 - p)^gamma log(p), negatives
// -(1 - alpha) p^gamma log(1 - p). log(p) and log(1 - p) are computed as log-sigmoids, which stay
// finite for any finite logit.
#include <ATen/ATen.h>
#include <ATen/ceil_div.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "grid.cuh"
#include "vision.h"

namespace {

using mrcnn::grid_size;
using mrcnn::kThreadsPerBlock;

// p = sigmoid(x) and 1 - p with their logarithms, without overflow or cancellation.
template <typename T>
struct SigmoidTerms {
  T p;
  T one_minus_p;
  T log_p;
  T log_one_minus_p;
};

template <typename T>
__device__ inline SigmoidTerms<T> sigmoid_terms(T x) {
  const T log1p_exp_neg_abs = log1p(exp(-fabs(x)));
  SigmoidTerms<T> s;
  s.log_p = min(x, static_cast<T>(0)) - log1p_exp_neg_abs;
  s.log_one_minus_p = -max(x, static_cast<T>(0)) - log1p_exp_neg_abs;
  s.p = exp(s.log_p);
  s.one_minus_p = exp(s.log_one_minus_p);
  return s;
}

// Role of element (n, c): +1 positive, 0 negative, -1 ignored.
__device__ inline int element_role(int target, int64_t column) {
  if (target < 0) return -1;
  return target == column + 1 ? 1 : 0;
}

template <typename T>
__global__ void sigmoid_focal_loss_forward_kernel(int64_t total, int64_t num_classes, const T* __restrict__ logits,
                                                  const int* __restrict__ targets, T gamma, T alpha,
                                                  T* __restrict__ losses) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int role = element_role(targets[index / num_classes], index % num_classes);
    T loss = 0;
    if (role >= 0) {
      const SigmoidTerms<T> s = sigmoid_terms(logits[index]);
      if (role == 1) {
        loss = -alpha * pow(s.one_minus_p, gamma) * s.log_p;
      } else {
        loss = -(static_cast<T>(1) - alpha) * pow(s.p, gamma) * s.log_one_minus_p;
      }
    }
    losses[index] = loss;
  }
}

// d loss / d x: positives -alpha (1 - p)^gamma ((1 - p) - gamma p log(p)),
// negatives -(1 - alpha) p^gamma (gamma (1 - p) log(1 - p) - p); times the incoming gradient.
template <typename T>
__global__ void sigmoid_focal_loss_backward_kernel(int64_t total, int64_t num_classes, const T* __restrict__ logits,
                                                   const int* __restrict__ targets, const T* __restrict__ d_losses,
                                                   T gamma, T alpha, T* __restrict__ d_logits) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int role = element_role(targets[index / num_classes], index % num_classes);
    T grad = 0;
    if (role >= 0) {
      const SigmoidTerms<T> s = sigmoid_terms(logits[index]);
      if (role == 1) {
        grad = -alpha * pow(s.one_minus_p, gamma) * (s.one_minus_p - gamma * s.p * s.log_p);
      } else {
        grad = -(static_cast<T>(1) - alpha) * pow(s.p, gamma) *
               (gamma * s.one_minus_p * s.log_one_minus_p - s.p);
      }
      grad *= d_losses[index];
    }
    d_logits[index] = grad;
  }
}

}  // namespace

at::Tensor SigmoidFocalLoss_forward_cuda(const at::Tensor& logits, const at::Tensor& targets, int64_t num_classes,
                                        double gamma, double alpha) {
  at::cuda::CUDAGuard device_guard(logits.device());
  auto losses = at::empty_like(logits);
  const int64_t total = logits.numel();
  if (total == 0) {
    return losses;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "SigmoidFocalLoss_forward_cuda", [&] {
    sigmoid_focal_loss_forward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, num_classes, logits.data_ptr<scalar_t>(), targets.data_ptr<int>(), static_cast<scalar_t>(gamma),
        static_cast<scalar_t>(alpha), losses.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return losses;
}

at::Tensor SigmoidFocalLoss_backward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                         const at::Tensor& d_losses, int64_t num_classes, double gamma,
                                         double alpha) {
  at::cuda::CUDAGuard device_guard(logits.device());
  auto d_logits = at::empty_like(logits);
  const int64_t total = logits.numel();
  if (total == 0) {
    return d_logits;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "SigmoidFocalLoss_backward_cuda", [&] {
    sigmoid_focal_loss_backward_kernel<scalar_t><<<grid_size(total), kThreadsPerBlock, 0, stream>>>(
        total, num_classes, logits.data_ptr<scalar_t>(), targets.data_ptr<int>(), d_losses.data_ptr<scalar_t>(),
        static_cast<scalar_t>(gamma), static_cast<scalar_t>(alpha), d_logits.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return d_logits;
}
