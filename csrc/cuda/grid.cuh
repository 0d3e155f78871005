// Launch geometry shared by the element-wise CUDA kernels: grid-stride loops over n elements.
#pragma once
#include <ATen/ceil_div.h>

#include <algorithm>
#include <cstdint>

namespace mrcnn {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = 4096;

// Blocks for a grid-stride loop over `n` elements.
inline unsigned int grid_size(int64_t n) {
  return static_cast<unsigned int>(std::min(at::ceil_div(n, static_cast<int64_t>(kThreadsPerBlock)), kMaxBlocks));
}

}  // namespace mrcnn
