"""Assignment of predictions (anchors, proposals) to ground-truth boxes by match quality (IoU)."""
import torch


class Matcher(object):
    """Matches each prediction to at most one ground-truth element.

    Given an (M, N) quality matrix (M ground-truth elements, N predictions), each prediction
    gets the index in [0, M - 1] of its best ground truth when that quality is
    >= high_threshold, BETWEEN_THRESHOLDS (-2) when it lies in [low_threshold, high_threshold),
    and BELOW_LOW_THRESHOLD (-1) when it is < low_threshold.

    Arguments:
        high_threshold (float): quality at or above which a match is accepted.
        low_threshold (float): quality below which a prediction is background.
        allow_low_quality_matches (bool): also match, for every ground truth, the predictions
            with the highest quality for it (ties included), even below the thresholds.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        if low_threshold > high_threshold:
            raise ValueError(
                "Matcher needs low_threshold <= high_threshold, got low {} > high {}".format(
                    low_threshold, high_threshold
                )
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix):
        """
        Arguments:
            match_quality_matrix (Tensor): (M, N) float quality of each (ground truth,
                prediction) pair.

        Returns:
            (N,) int64 tensor: matched ground-truth index, or -1 / -2 as described above.
        """
        if match_quality_matrix.numel() == 0:
            if match_quality_matrix.shape[0] == 0:
                raise ValueError(
                    "No ground-truth boxes available for one of the images during training; "
                    "build the training dataset with remove_images_without_annotations=True "
                    "so that images without annotations are skipped"
                )
            raise ValueError(
                "No proposal boxes available for one of the images during training; "
                "check MODEL.RPN.PRE_NMS_TOP_N_TRAIN, POST_NMS_TOP_N_TRAIN, "
                "FPN_POST_NMS_TOP_N_TRAIN (all > 0) and MIN_SIZE"
            )

        matched_vals, matches = match_quality_matrix.max(dim=0)
        if self.allow_low_quality_matches:
            all_matches = matches.clone()

        below_low_threshold = matched_vals < self.low_threshold
        between_thresholds = (matched_vals >= self.low_threshold) & (
            matched_vals < self.high_threshold
        )
        matches[below_low_threshold] = Matcher.BELOW_LOW_THRESHOLD
        matches[between_thresholds] = Matcher.BETWEEN_THRESHOLDS

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)
        return matches

    def set_low_quality_matches_(self, matches, all_matches, match_quality_matrix):
        """Restore, in place, the match of every prediction that is the best one for some
        ground truth (ties included); the restored index is that prediction's own best
        ground truth, which may be a different one."""
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
        gt_pred_pairs_of_highest_quality = torch.nonzero(
            match_quality_matrix == highest_quality_foreach_gt[:, None]
        )
        pred_inds_to_update = gt_pred_pairs_of_highest_quality[:, 1]
        matches[pred_inds_to_update] = all_matches[pred_inds_to_update]
