// Greedy NMS on CUDA (the py-faster-rcnn bitmask scheme): boxes sorted by score are split into
// blocks of 64; the kernel writes, for every box, a 64-bit mask per column block of the later boxes
// it overlaps with IoU > threshold, and the greedy pass over those masks runs on the host.
// IoU uses the +1 convention: a box [x1, y1, x2, y2] covers (x2 - x1 + 1) * (y2 - y1 + 1) pixels.
#include <ATen/ATen.h>
#include <ATen/ceil_div.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "vision.h"

namespace {

constexpr int kBoxesPerBlock = 64;  // one bit per box of a column block in an unsigned long long
constexpr int64_t kMaxColumnBlocks = 65535;  // gridDim.y limit

template <typename T>
__device__ inline T iou_plus_one(const T* a, const T* b) {
  const T left = max(a[0], b[0]);
  const T right = min(a[2], b[2]);
  const T top = max(a[1], b[1]);
  const T bottom = min(a[3], b[3]);
  const T width = max(right - left + 1, static_cast<T>(0));
  const T height = max(bottom - top + 1, static_cast<T>(0));
  const T intersection = width * height;
  const T area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1);
  const T area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
  return intersection / (area_a + area_b - intersection);
}

// Block (column block x, row block y), thread i: box row_block * 64 + i against the boxes of the
// column block. boxes: (num_boxes, 4) sorted by score; mask: (num_boxes, column_blocks).
// Blocks below the diagonal have nothing to do and leave their mask words unwritten: the host pass
// only reads a box's words from its own column block on.
template <typename T>
__global__ void nms_mask_kernel(int64_t num_boxes, int64_t column_blocks, T threshold, const T* __restrict__ boxes,
                                unsigned long long* __restrict__ mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t column_block = blockIdx.x;
  if (row_block > column_block) {
    return;
  }
  const int row_size = static_cast<int>(min(num_boxes - row_block * kBoxesPerBlock, int64_t{kBoxesPerBlock}));
  const int column_size =
      static_cast<int>(min(num_boxes - column_block * kBoxesPerBlock, int64_t{kBoxesPerBlock}));

  __shared__ T column_boxes[kBoxesPerBlock * 4];
  if (threadIdx.x < column_size) {
    const int64_t source = (column_block * kBoxesPerBlock + threadIdx.x) * 4;
    for (int d = 0; d < 4; ++d) {
      column_boxes[threadIdx.x * 4 + d] = boxes[source + d];
    }
  }
  __syncthreads();

  if (threadIdx.x < row_size) {
    const int64_t box_index = row_block * kBoxesPerBlock + threadIdx.x;
    const T* box = boxes + box_index * 4;
    unsigned long long overlaps = 0;
    // On the diagonal a box is only compared with the boxes after it.
    const int first = row_block == column_block ? static_cast<int>(threadIdx.x) + 1 : 0;
    for (int i = first; i < column_size; ++i) {
      if (iou_plus_one(box, column_boxes + i * 4) > threshold) {
        overlaps |= 1ULL << i;
      }
    }
    mask[box_index * column_blocks + column_block] = overlaps;
  }
}

}  // namespace

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  at::cuda::CUDAGuard device_guard(dets.device());
  const int64_t num_boxes = dets.size(0);
  if (num_boxes == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const int64_t column_blocks = at::ceil_div(num_boxes, int64_t{kBoxesPerBlock});
  TORCH_CHECK(column_blocks <= kMaxColumnBlocks, "nms: at most ", kMaxColumnBlocks * kBoxesPerBlock,
              " boxes are supported on CUDA, got ", num_boxes, "; keep fewer boxes (top-k by score) before NMS");

  // Stable: tied scores are visited by ascending index, as on the CPU.
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = dets.index_select(0, order).contiguous();
  // Every word the host pass reads is written by the kernel, so no zero fill is needed.
  at::Tensor mask = at::empty({num_boxes, column_blocks}, dets.options().dtype(at::kLong));

  const dim3 blocks(static_cast<unsigned int>(column_blocks), static_cast<unsigned int>(column_blocks));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cuda", [&] {
    nms_mask_kernel<scalar_t><<<blocks, kBoxesPerBlock, 0, stream>>>(
        num_boxes, column_blocks, static_cast<scalar_t>(threshold), sorted_boxes.data_ptr<scalar_t>(),
        reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Greedy pass in score order: keep a box unless an already kept box suppressed it.
  const at::Tensor host_mask = mask.to(at::kCPU);
  const auto* mask_words = reinterpret_cast<const unsigned long long*>(host_mask.data_ptr<int64_t>());
  std::vector<unsigned long long> suppressed(column_blocks, 0);
  at::Tensor keep = at::empty({num_boxes}, at::TensorOptions().dtype(at::kLong));
  int64_t* keep_data = keep.data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t i = 0; i < num_boxes; ++i) {
    const int64_t block = i / kBoxesPerBlock;
    const int bit = static_cast<int>(i % kBoxesPerBlock);
    if (suppressed[block] & (1ULL << bit)) {
      continue;
    }
    keep_data[num_kept++] = i;
    const unsigned long long* row = mask_words + i * column_blocks;
    for (int64_t j = block; j < column_blocks; ++j) {
      suppressed[j] |= row[j];
    }
  }

  const at::Tensor kept_positions = keep.narrow(0, 0, num_kept).to(order.device());
  return std::get<0>(order.index_select(0, kept_positions).sort(/*dim=*/0, /*descending=*/false));
}
