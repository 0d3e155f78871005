// Greedy non-maximum suppression on the CPU, upstream's semantics: boxes are visited by descending score (ties by
// ascending index), areas and intersections use the +1 pixel convention, a box is suppressed when its IoU with a kept
// box is >= threshold, and the kept indices are returned in ascending index order.
//
// The boxes are copied in score order into separate coordinate arrays, so that the IoUs of a kept box against all
// later candidates form one branch-free, vectorisable loop. Suppressed candidates are compacted away every few kept
// boxes, so later passes mostly touch boxes that are still alive.
//
// batched_nms_cpu runs the same greedy pass independently per label (e.g. per class), in one call.
#include "cpu/vision.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace {

// Kept boxes between two compactions of the candidate arrays.
constexpr int64_t kKeptPerCompaction = 32;

// Candidate boxes in score order, one array per field, with a suppression flag.
template <typename T>
struct Candidates {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> index;
  std::vector<uint8_t> suppressed;

  Candidates(const T* boxes, const std::vector<int64_t>& order)
      : x1(order.size()), y1(order.size()), x2(order.size()), y2(order.size()), area(order.size()),
        index(order), suppressed(order.size(), 0) {
    for (size_t i = 0; i < order.size(); ++i) {
      const T* box = boxes + order[i] * 4;
      x1[i] = box[0];
      y1[i] = box[1];
      x2[i] = box[2];
      y2[i] = box[3];
      area[i] = (box[2] - box[0] + 1) * (box[3] - box[1] + 1);
    }
  }

  // Flags every candidate in [begin, end) whose IoU with candidate i is >= thresh.
  void suppress_overlaps(int64_t i, int64_t begin, int64_t end, T thresh) {
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    const T* __restrict__ bx1 = x1.data();
    const T* __restrict__ by1 = y1.data();
    const T* __restrict__ bx2 = x2.data();
    const T* __restrict__ by2 = y2.data();
    const T* __restrict__ barea = area.data();
    uint8_t* __restrict__ flag = suppressed.data();
    for (int64_t j = begin; j < end; ++j) {
      const T w = std::max(T(0), std::min(ix2, bx2[j]) - std::max(ix1, bx1[j]) + 1);
      const T h = std::max(T(0), std::min(iy2, by2[j]) - std::max(iy1, by1[j]) + 1);
      const T inter = w * h;
      const T iou = inter / (iarea + barea[j] - inter);
      flag[j] |= static_cast<uint8_t>(iou >= thresh);
    }
  }

  // Moves the unsuppressed candidates of [begin, end) to the front of that range; returns the new end.
  int64_t compact(int64_t begin, int64_t end) {
    int64_t out = begin;
    for (int64_t j = begin; j < end; ++j) {
      if (!suppressed[j]) {
        x1[out] = x1[j];
        y1[out] = y1[j];
        x2[out] = x2[j];
        y2[out] = y2[j];
        area[out] = area[j];
        index[out] = index[j];
        suppressed[out] = 0;
        ++out;
      }
    }
    return out;
  }
};

// Greedy NMS over the boxes ``order`` (indices into ``boxes``, already in visiting order): sets keep[index] = 1 for
// every kept box.
template <typename T>
void greedy_keep(const T* boxes, const std::vector<int64_t>& order, T thresh, uint8_t* keep) {
  Candidates<T> candidates(boxes, order);
  int64_t end = static_cast<int64_t>(order.size());
  int64_t kept_since_compaction = 0;
  for (int64_t i = 0; i < end; ++i) {
    if (candidates.suppressed[i]) {
      continue;
    }
    // Candidate i survived every higher-scoring kept box, so it is kept.
    keep[candidates.index[i]] = 1;
    candidates.suppress_overlaps(i, i + 1, end, thresh);
    if (++kept_since_compaction == kKeptPerCompaction) {
      end = candidates.compact(i + 1, end);
      kept_since_compaction = 0;
    }
  }
}

// Upstream's kernel takes the threshold as a float, also for float64 boxes.
template <typename T>
T float_threshold(double threshold) {
  return static_cast<T>(static_cast<float>(threshold));
}

template <typename T>
std::vector<uint8_t> nms_keep_mask(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  const int64_t num_boxes = dets.size(0);
  const T* score = scores.data_ptr<T>();
  std::vector<int64_t> order(num_boxes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [score](int64_t a, int64_t b) { return score[a] > score[b]; });
  std::vector<uint8_t> keep(num_boxes, 0);
  greedy_keep(dets.data_ptr<T>(), order, float_threshold<T>(threshold), keep.data());
  return keep;
}

// As nms_keep_mask, independently for each label: boxes of different labels never suppress each other.
template <typename T>
std::vector<uint8_t> batched_nms_keep_mask(const at::Tensor& dets, const at::Tensor& scores,
                                           const at::Tensor& labels, double threshold) {
  const int64_t num_boxes = dets.size(0);
  const T* score = scores.data_ptr<T>();
  const int64_t* label = labels.data_ptr<int64_t>();
  // Boxes grouped by label, in ascending index order within each label (already so when the labels are sorted).
  std::vector<int64_t> order(num_boxes);
  std::iota(order.begin(), order.end(), 0);
  if (!std::is_sorted(label, label + num_boxes)) {
    std::stable_sort(order.begin(), order.end(), [label](int64_t a, int64_t b) { return label[a] < label[b]; });
  }
  std::vector<int64_t> run_starts;
  for (int64_t i = 0; i < num_boxes; ++i) {
    if (i == 0 || label[order[i]] != label[order[i - 1]]) {
      run_starts.push_back(i);
    }
  }
  run_starts.push_back(num_boxes);

  std::vector<uint8_t> keep(num_boxes, 0);
  const T* boxes = dets.data_ptr<T>();
  const T thresh = float_threshold<T>(threshold);
  const int64_t num_runs = static_cast<int64_t>(run_starts.size()) - 1;
  // Runs touch disjoint entries of keep, so they can be processed in parallel.
  at::parallel_for(0, num_runs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t run = begin; run < end; ++run) {
      // nms's visiting order within the label: descending score, ties by ascending index.
      std::vector<int64_t> run_order(order.begin() + run_starts[run], order.begin() + run_starts[run + 1]);
      std::stable_sort(run_order.begin(), run_order.end(), [score](int64_t a, int64_t b) { return score[a] > score[b]; });
      greedy_keep(boxes, run_order, thresh, keep.data());
    }
  });
  return keep;
}

// Ascending indices of the set entries of keep.
at::Tensor kept_indices(const std::vector<uint8_t>& keep, const at::TensorOptions& options) {
  const int64_t num_kept = std::count(keep.begin(), keep.end(), uint8_t(1));
  auto kept = at::empty({num_kept}, options.dtype(at::kLong));
  int64_t* kept_data = kept.data_ptr<int64_t>();
  for (int64_t i = 0, n = 0; i < static_cast<int64_t>(keep.size()); ++i) {
    if (keep[i]) {
      kept_data[n++] = i;
    }
  }
  return kept;
}

}  // namespace

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double threshold) {
  TORCH_CHECK(dets.device().is_cpu(), "nms: tensors on ", dets.device(),
              " are not supported; use CPU or CUDA tensors");
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  std::vector<uint8_t> keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cpu",
                             [&] { keep = nms_keep_mask<scalar_t>(dets, scores, threshold); });
  return kept_indices(keep, dets.options());
}

at::Tensor batched_nms_cpu(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                           double threshold) {
  TORCH_CHECK(dets.device().is_cpu(), "batched_nms: tensors on ", dets.device(),
              " are not supported; use CPU or CUDA tensors");
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  std::vector<uint8_t> keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "batched_nms_cpu",
                             [&] { keep = batched_nms_keep_mask<scalar_t>(dets, scores, labels, threshold); });
  return kept_indices(keep, dets.options());
}
