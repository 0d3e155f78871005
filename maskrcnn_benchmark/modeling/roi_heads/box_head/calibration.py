"""Post-hoc score calibration of the box classifier: NorCal (Pan et al., "On Model Calibration
for Long-Tailed Object Detection and Instance Segmentation", NeurIPS 2021, Sec. 4).

Each foreground class j's softmax probability is divided by a_j = N_j^gamma, N_j the number of
training images with an instance of j; the background probability is left as it is; then the
scores of a RoI are renormalised to sum to 1 over all classes, background included:

    s_j = (p_j / a_j) / (p_0 + sum_k p_k / a_k),   s_0 = p_0 / (p_0 + sum_k p_k / a_k).

No retraining: it applies to any softmax box classifier (LST's included). Without the
renormalisation (RENORM False) it is a per-class rescaling, which keeps each class's ranking of
RoIs; with it, a RoI's classes keep their ratios times a_k / a_j, but a class's ranking of RoIs
can change (the denominator differs between RoIs), which is why NorCal helps even under Fixed AP.
"""
import logging

import torch

from maskrcnn_benchmark.data.datasets.annotation_checks import training_statistics

logger = logging.getLogger(__name__)


def norcal_factors(image_counts, gamma):
    """(C,) factors 1 / N_j^gamma, 1 for the background (label 0).

    Arguments:
        image_counts (sequence[int]): training images of labels 1..C-1, all > 0.
        gamma (float): >= 0.
    """
    counts = torch.as_tensor(image_counts, dtype=torch.float64)
    if torch.any(counts <= 0):
        raise ValueError("NorCal needs every class to have training images; labels {} have none "
                         "(set TEST.CALIBRATION.GAMMA 0)".format(
                             (torch.nonzero(counts <= 0).squeeze(1) + 1).tolist()[:10]))
    factors = torch.cat([torch.ones(1, dtype=torch.float64), counts.pow(-gamma)])
    return factors.float()


def norcal_scores(class_prob, factors, renorm=True):
    """Calibrated scores of RoIs.

    Arguments:
        class_prob (Tensor): (R, C) softmax probabilities, background in column 0.
        factors (Tensor): (C,) norcal_factors.
        renorm (bool): renormalise each row to sum 1, background included.

    Returns:
        Tensor (R, C).
    """
    scores = class_prob * factors.to(class_prob)
    if renorm:
        scores = scores / scores.sum(dim=1, keepdim=True)
    return scores


def training_image_counts(train_annotations, label_to_category):
    """Training images per label 1..C-1.

    Arguments:
        train_annotations (str or dict): the LVIS-format training json (or its path).
        label_to_category (dict[int, int]): contiguous label -> category id (a dataset's
            ``contiguous_category_id_to_json_id``).
    """
    image_counts = training_statistics(train_annotations)[1]
    missing = [c for c in label_to_category.values() if c not in image_counts]
    if missing:
        raise ValueError("NorCal: categories {} of the evaluated dataset are not in the training "
                         "annotations; DATASETS.TRAIN must be the model's training set"
                         .format(missing[:10]))
    return [image_counts[label_to_category[label]] for label in sorted(label_to_category)]


def calibrate_box_head(model, cfg, dataset, train_annotations):
    """Set (TEST.CALIBRATION.GAMMA > 0) or clear NorCal on the model's box post-processor.

    Arguments:
        model: a GeneralizedRCNN.
        dataset: the evaluated dataset, whose ``contiguous_category_id_to_json_id`` maps the
            model's labels to categories.
        train_annotations (str or dict or None): the training json giving N_j.
    """
    gamma = cfg.TEST.CALIBRATION.GAMMA
    box_head = getattr(getattr(model, "roi_heads", None), "box", None)
    if gamma == 0:
        if box_head is not None:
            box_head.post_processor.class_factors = None
        return
    if box_head is None:
        raise ValueError("TEST.CALIBRATION.GAMMA {} calibrates the box head's classifier, but the "
                         "model has no box head; set it to 0".format(gamma))
    post_processor = box_head.post_processor
    loss = cfg.MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS
    if cfg.TEST.CALIBRATION.RENORM and loss in ("federated", "eqlv2"):
        raise ValueError("TEST.CALIBRATION.RENORM renormalises softmax scores, but "
                         "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS '{}' scores each class by a sigmoid; "
                         "set TEST.CALIBRATION.RENORM False (a per-class rescaling)".format(loss))
    if train_annotations is None:
        raise ValueError("TEST.CALIBRATION.GAMMA {} needs the training image counts: set "
                         "DATASETS.TRAIN to the model's one training dataset".format(gamma))
    counts = training_image_counts(train_annotations, dataset.contiguous_category_id_to_json_id)
    post_processor.class_factors = norcal_factors(counts, gamma)
    post_processor.calibration_renorm = cfg.TEST.CALIBRATION.RENORM
    logger.info("NorCal: foreground scores / N_j^%s (training images), %srenormalised", gamma,
                "" if cfg.TEST.CALIBRATION.RENORM else "not ")
