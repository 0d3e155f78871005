// Sigmoid focal loss (RetinaNet) on the CPU, element-wise, upstream's label encoding: targets hold 0 for background,
// c in 1..C for the class whose logit is column c - 1, and negative values for ignored rows.
//
// With p = sigmoid(x) and q = 1 - p = sigmoid(-x):
//   positive column:  loss = -alpha * q^gamma * log(p)
//                     d/dx = -alpha * q^gamma * (q - gamma * p * log(p))
//   negative column:  loss = -(1 - alpha) * p^gamma * log(q)
//                     d/dx = -(1 - alpha) * p^gamma * (gamma * q * log(q) - p)
// log(p) and log(q) are computed as stable log-sigmoids; ignored rows get zero loss and zero gradient.
#include "cpu/vision.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace {

// log(sigmoid(x)) without overflow or log(0) for large |x|.
template <typename T>
T log_sigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}

template <typename T>
T sigmoid(T x) {
  return std::exp(log_sigmoid(x));
}

// Calls fn(e, counted, positive) for every element e = i * C + c of an (N, C) problem: counted is false in ignored
// rows (negative target), positive is true in the target class's column. Runs in parallel over rows.
template <typename Fn>
void for_each_element(const int32_t* targets, int64_t num_rows, int64_t num_classes, Fn fn) {
  at::parallel_for(0, num_rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int32_t target = targets[i];
      for (int64_t c = 0; c < num_classes; ++c) {
        fn(i * num_classes + c, target >= 0, target == c + 1);
      }
    }
  });
}

}  // namespace

at::Tensor SigmoidFocalLoss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t num_classes,
                                        double gamma, double alpha) {
  TORCH_CHECK(logits.device().is_cpu(), "SigmoidFocalLoss_forward: tensors on ", logits.device(),
              " are not supported; use CPU or CUDA tensors");
  auto losses = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "SigmoidFocalLoss_forward_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* loss = losses.data_ptr<scalar_t>();
    const scalar_t g = static_cast<scalar_t>(gamma);
    const scalar_t a = static_cast<scalar_t>(alpha);
    for_each_element(targets.data_ptr<int32_t>(), logits.size(0), num_classes,
                     [&](int64_t e, bool counted, bool positive) {
                       if (!counted) {
                         loss[e] = 0;
                       } else if (positive) {
                         loss[e] = -a * std::pow(sigmoid(-x[e]), g) * log_sigmoid(x[e]);
                       } else {
                         loss[e] = -(1 - a) * std::pow(sigmoid(x[e]), g) * log_sigmoid(-x[e]);
                       }
                     });
  });
  return losses;
}

at::Tensor SigmoidFocalLoss_backward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                         const at::Tensor& d_losses, int64_t num_classes, double gamma,
                                         double alpha) {
  TORCH_CHECK(logits.device().is_cpu(), "SigmoidFocalLoss_backward: tensors on ", logits.device(),
              " are not supported; use CPU or CUDA tensors");
  auto d_logits = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "SigmoidFocalLoss_backward_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    const scalar_t* d_loss = d_losses.data_ptr<scalar_t>();
    scalar_t* d_x = d_logits.data_ptr<scalar_t>();
    const scalar_t g = static_cast<scalar_t>(gamma);
    const scalar_t a = static_cast<scalar_t>(alpha);
    for_each_element(targets.data_ptr<int32_t>(), logits.size(0), num_classes,
                     [&](int64_t e, bool counted, bool positive) {
                       const scalar_t p = sigmoid(x[e]);
                       const scalar_t q = sigmoid(-x[e]);
                       scalar_t grad = 0;
                       if (counted && positive) {
                         grad = -a * std::pow(q, g) * (q - g * p * log_sigmoid(x[e]));
                       } else if (counted) {
                         grad = -(1 - a) * std::pow(p, g) * (g * q * log_sigmoid(-x[e]) - p);
                       }
                       d_x[e] = grad * d_loss[e];
                     });
  });
  return d_logits;
}
