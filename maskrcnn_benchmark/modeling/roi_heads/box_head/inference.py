"""Box-head post-processing: scores and deltas of the RoIs -> per-class NMS'd detections."""
import torch
import torch.nn.functional as F
from torch import nn

from maskrcnn_benchmark.layers import batched_nms
from maskrcnn_benchmark.modeling.box_coder import BoxCoder
from maskrcnn_benchmark.structures.bounding_box import BoxList

from .calibration import norcal_scores


class PostProcessor(nn.Module):
    """Turns class logits and box deltas of the RoIs into detections, as upstream:

    scores (softmax, or the classification loss's score function); decode the boxes of every
    class; clip to [0, W - 1] x [0, H - 1]; then per foreground class j: keep scores >
    score_thresh, NMS (+1 IoU) at ``nms`` (all classes in batched calls, the same result as a loop
    over them); with ``detections_per_class``, keep the detections_per_class best of each class
    (ties in the candidates' order); concatenate the classes in order; if more than
    ``detections_per_img`` remain, keep every detection scoring at least the
    detections_per_img-th best score (so ties can exceed the limit). The output is grouped by
    class, not sorted by score, and small boxes are not removed.

    ``class_factors`` ((C,) tensor, None by default; calibration.calibrate_box_head sets it)
    applies NorCal to the probabilities first (``calibration_renorm``: renormalised).

    Fixed AP (Dave et al. 2021, Sec. 3) needs detections without a per-image cap:
    detections_per_img 0, optionally with detections_per_class bounding each class per image.

    Arguments:
        score_thresh (float)
        nms (float): per-class NMS IoU threshold.
        detections_per_img (int): limit over all classes; <= 0 disables it.
        detections_per_class (int): limit per class (per image), before detections_per_img;
            <= 0 disables it.
        box_coder (BoxCoder): decodes the deltas; weights (10, 10, 5, 5) by default.
        cls_agnostic_bbox_reg (bool): deltas hold one foreground box (columns 4:8) for all classes.
        bbox_aug_enabled (bool): skip thresholding and NMS; test-time augmentation does them
            after merging the augmented predictions.
        score_function (callable, optional): class logits (R, W) -> (R, C) probabilities,
            column 0 background (classification_losses.py); None: softmax.
    """

    def __init__(
        self,
        score_thresh=0.05,
        nms=0.5,
        detections_per_img=100,
        box_coder=None,
        cls_agnostic_bbox_reg=False,
        bbox_aug_enabled=False,
        score_function=None,
        detections_per_class=0,
    ):
        super(PostProcessor, self).__init__()
        self.score_thresh = score_thresh
        self.nms = nms
        self.detections_per_img = detections_per_img
        self.detections_per_class = detections_per_class
        self.class_factors = None
        self.calibration_renorm = True
        if box_coder is None:
            box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.box_coder = box_coder
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.bbox_aug_enabled = bbox_aug_enabled
        self.score_function = score_function

    def forward(self, x, boxes):
        """
        Arguments:
            x (tuple[Tensor, Tensor]): class logits (R, W) and box deltas (R, 4 * K) of the
                RoIs of all images, in the order of ``boxes``.
            boxes (list[BoxList]): the RoIs (xyxy) of each image.

        Returns:
            list[BoxList]: per image, the detections with the fields "scores" and "labels"
            (with bbox_aug_enabled: every (RoI, class) box, (R * C, 4), with "scores" only).
        """
        class_logits, box_regression = x
        if self.score_function is None:
            class_prob = F.softmax(class_logits, -1)
        else:
            class_prob = self.score_function(class_logits)
        if self.class_factors is not None:
            class_prob = norcal_scores(class_prob, self.class_factors, self.calibration_renorm)

        image_shapes = [box.size for box in boxes]
        boxes_per_image = [len(box) for box in boxes]
        concat_boxes = torch.cat([a.bbox for a in boxes], dim=0)

        if self.cls_agnostic_bbox_reg:
            box_regression = box_regression[:, -4:]
        proposals = self.box_coder.decode(
            box_regression.view(sum(boxes_per_image), -1), concat_boxes
        )
        num_classes = class_prob.shape[1]
        if self.cls_agnostic_bbox_reg:
            proposals = proposals.repeat(1, num_classes)

        results = []
        for prob, boxes_per_img, image_shape in zip(
            class_prob.split(boxes_per_image, dim=0),
            proposals.split(boxes_per_image, dim=0),
            image_shapes,
        ):
            boxlist = self.prepare_boxlist(boxes_per_img, prob, image_shape)
            boxlist = boxlist.clip_to_image(remove_empty=False)
            if not self.bbox_aug_enabled:
                boxlist = self.filter_results(boxlist, num_classes)
            results.append(boxlist)
        return results

    def prepare_boxlist(self, boxes, scores, image_shape):
        """BoxList of every (RoI, class) box.

        Arguments:
            boxes (Tensor): (R, 4 * C); boxes[i, 4j:4j+4] is RoI i's box for class j.
            scores (Tensor): (R, C) probabilities.
            image_shape (tuple[int, int]): (width, height).

        Returns:
            BoxList of R * C boxes (RoI-major) with the field "scores".
        """
        boxlist = BoxList(boxes.reshape(-1, 4), image_shape, mode="xyxy")
        boxlist.add_field("scores", scores.reshape(-1))
        return boxlist

    def filter_results(self, boxlist, num_classes):
        """Score threshold and NMS per foreground class (batched), then the per-image limit.

        The candidates are laid out class by class, each class's RoIs in ascending order, so the kept
        detections come out in the order of upstream's loop over the classes.
        """
        boxes = boxlist.bbox.reshape(-1, num_classes, 4)
        scores = boxlist.get_field("scores").reshape(-1, num_classes)

        foreground = (scores[:, 1:] > self.score_thresh).t()  # (C - 1, R), class-major
        labels, rois = foreground.nonzero().unbind(dim=1)
        labels = labels + 1
        result = BoxList(boxes[rois, labels], boxlist.size, mode="xyxy")
        result.add_field("scores", scores[rois, labels])
        result.add_field("labels", labels)
        result = self.nms_per_class(result)
        if self.detections_per_class > 0:
            result = result[self.best_per_class(result.get_field("scores"),
                                                result.get_field("labels"))]

        number_of_detections = len(result)
        if number_of_detections > self.detections_per_img > 0:
            cls_scores = result.get_field("scores")
            image_thresh, _ = torch.kthvalue(
                cls_scores.cpu(), number_of_detections - self.detections_per_img + 1
            )
            keep = torch.nonzero(cls_scores >= image_thresh.item()).squeeze(1)
            result = result[keep]
        return result

    def best_per_class(self, scores, labels):
        """Ascending indices of the detections_per_class highest scores of each label.

        Arguments:
            scores (Tensor): (N,) scores; labels (Tensor): (N,) int64 labels.
        Ties keep the lower index, as a stable sort by descending score would.
        """
        by_score = torch.sort(scores, descending=True, stable=True).indices
        order = by_score[torch.sort(labels[by_score], stable=True).indices]  # label, -score
        sorted_labels = labels[order]
        first = torch.searchsorted(sorted_labels, sorted_labels, right=False)
        rank = torch.arange(len(order), device=order.device) - first
        return order[rank < self.detections_per_class].sort().values

    def nms_per_class(self, candidates):
        """The candidates (fields "scores", "labels") that NMS keeps within each class, in their order.

        With a detection limit, NMS runs first on the best-scoring candidates only, as many as four
        (then 16, ...) times the limit, plus any tied with the last of them: a box is suppressed only by
        boxes of its class that score higher, or the same with a lower index, all of them in that set,
        so NMS keeps or drops each of them as among all the candidates. Once that keeps at least
        detections_per_img boxes, the limit's threshold (the detections_per_img-th best kept score) is
        no lower than any of them, and the limit returns exactly what it would after NMS on all.
        A per-class limit, applied before the per-image one, voids that argument: then NMS runs on
        all candidates.
        """
        if self.nms <= 0:
            return candidates
        scores = candidates.get_field("scores")
        count = 4 * self.detections_per_img if self.detections_per_class <= 0 else 0
        while 0 < count < len(candidates):
            lowest = torch.topk(scores, count, sorted=False).values.min()
            best = candidates[torch.nonzero(scores >= lowest).squeeze(1)]
            kept = best[batched_nms(best.bbox, best.get_field("scores"), best.get_field("labels"), self.nms)]
            if len(kept) >= self.detections_per_img:
                return kept
            count *= 4
        return candidates[batched_nms(candidates.bbox, scores, candidates.get_field("labels"), self.nms)]


def make_roi_box_post_processor(cfg, score_function=None):
    """PostProcessor configured by MODEL.ROI_HEADS (SCORE_THRESH, NMS, DETECTIONS_PER_IMG,
    DETECTIONS_PER_CLASS, BBOX_REG_WEIGHTS), MODEL.CLS_AGNOSTIC_BBOX_REG and TEST.BBOX_AUG.ENABLED,
    scoring with ``score_function`` (None: softmax)."""
    roi_heads = cfg.MODEL.ROI_HEADS
    return PostProcessor(
        score_thresh=roi_heads.SCORE_THRESH,
        nms=roi_heads.NMS,
        detections_per_img=roi_heads.DETECTIONS_PER_IMG,
        box_coder=BoxCoder(weights=roi_heads.BBOX_REG_WEIGHTS),
        cls_agnostic_bbox_reg=cfg.MODEL.CLS_AGNOSTIC_BBOX_REG,
        bbox_aug_enabled=cfg.TEST.BBOX_AUG.ENABLED,
        score_function=score_function,
        detections_per_class=roi_heads.DETECTIONS_PER_CLASS,
    )
