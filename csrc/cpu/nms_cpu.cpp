// Greedy non-maximum suppression on the CPU, upstream's semantics: boxes are visited by descending score (ties by
// ascending index), areas and intersections use the +1 pixel convention, a box is suppressed when its IoU with a kept
// box is >= threshold, and the kept indices are returned in ascending index order.
//
// The boxes are copied in score order into separate coordinate arrays. After each kept box, the surviving candidates
// are compacted in place, so later passes touch only boxes that are still alive, with contiguous memory access.
#include "cpu/vision.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace {

// Candidate boxes in score order, one array per field.
template <typename T>
struct Candidates {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> index;

  void move(int64_t from, int64_t to) {
    x1[to] = x1[from];
    y1[to] = y1[from];
    x2[to] = x2[from];
    y2[to] = y2[from];
    area[to] = area[from];
    index[to] = index[from];
  }
};

template <typename T>
std::vector<uint8_t> nms_keep_mask(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  const int64_t num_boxes = dets.size(0);
  const T* boxes = dets.data_ptr<T>();
  const T* score = scores.data_ptr<T>();

  std::vector<int64_t> order(num_boxes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [score](int64_t a, int64_t b) { return score[a] > score[b]; });

  Candidates<T> c;
  for (auto* field : {&c.x1, &c.y1, &c.x2, &c.y2, &c.area}) {
    field->resize(num_boxes);
  }
  c.index = order;
  for (int64_t i = 0; i < num_boxes; ++i) {
    const T* box = boxes + order[i] * 4;
    c.x1[i] = box[0];
    c.y1[i] = box[1];
    c.x2[i] = box[2];
    c.y2[i] = box[3];
    c.area[i] = (box[2] - box[0] + 1) * (box[3] - box[1] + 1);
  }

  // Upstream's kernel takes the threshold as a float, also for float64 boxes.
  const T thresh = static_cast<T>(static_cast<float>(threshold));
  std::vector<uint8_t> keep(num_boxes, 0);
  int64_t alive = num_boxes;
  for (int64_t i = 0; i < alive; ++i) {
    // Candidate i survived every higher-scoring kept box, so it is kept.
    keep[c.index[i]] = 1;
    const T ix1 = c.x1[i], iy1 = c.y1[i], ix2 = c.x2[i], iy2 = c.y2[i], iarea = c.area[i];
    int64_t survivors = i + 1;
    for (int64_t j = i + 1; j < alive; ++j) {
      const T w = std::max(T(0), std::min(ix2, c.x2[j]) - std::max(ix1, c.x1[j]) + 1);
      const T h = std::max(T(0), std::min(iy2, c.y2[j]) - std::max(iy1, c.y1[j]) + 1);
      const T inter = w * h;
      const T iou = inter / (iarea + c.area[j] - inter);
      c.move(j, survivors);
      survivors += !(iou >= thresh);
    }
    alive = survivors;
  }
  return keep;
}

}  // namespace

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  std::vector<uint8_t> keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cpu", [&] { keep = nms_keep_mask<scalar_t>(dets, scores, threshold); });
  const int64_t num_kept = std::count(keep.begin(), keep.end(), uint8_t(1));
  auto kept = at::empty({num_kept}, dets.options().dtype(at::kLong));
  int64_t* kept_data = kept.data_ptr<int64_t>();
  for (int64_t i = 0, n = 0; i < static_cast<int64_t>(keep.size()); ++i) {
    if (keep[i]) {
      kept_data[n++] = i;
    }
  }
  return kept;
}
