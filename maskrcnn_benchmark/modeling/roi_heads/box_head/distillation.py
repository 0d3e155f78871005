"""Knowledge distillation of the old classes' cosine logits (paper §3.2 Eq. 2).

In phase t, the previous model theta_{t-1} (the teacher) and the current model (the student) score
the ground-truth boxes of the NEW classes (label > MODEL.LST.NUM_OLD_CLASSES) against the OLD
classes only: y = <x / |x|, w_j / |w_j|> for classifier rows j = 1..N_old, unscaled and without the
background column. The loss pulls the student's y'_t towards the teacher's y_{t-1}.

Unlike the authors' offline JSON of logits (their get_distillation branch), the teacher runs
online on the very tensors the student sees, so augmentations such as horizontal flips need no
bookkeeping. The teacher is frozen and kept outside the student's module tree: it never appears
in the student's state dict, parameters, optimizer or DistributedDataParallel buckets.
"""
import logging
import os
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.modeling.backbone import build_backbone
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.utils.model_serialization import load_state_dict, strip_prefix_if_present

from .roi_box_feature_extractors import make_roi_box_feature_extractor
from .roi_box_predictors import FPNCosinePredictor, make_roi_box_predictor

LOSS_TYPES = ("l2", "squared_sum")
CLS_WEIGHT_KEY = "roi_heads.box.predictor.cls_score.weight"


def old_class_cosine(predictor, box_features, num_old_classes):
    """Unscaled cosine similarities of box features with the old classes' classifier rows.

    Arguments:
        predictor (FPNCosinePredictor): its cls_score.weight (C, D) holds row 0 = background.
        box_features (Tensor): (B, D) or (B, D, 1, 1) features of the box feature extractor.
        num_old_classes (int): N_old; rows 1..N_old are scored.

    Returns:
        Tensor: (B, N_old) cosines in [-1, 1] (eps 1e-12 in the normalisations, as the predictor).
    """
    x = F.normalize(box_features.flatten(start_dim=1), p=2, dim=1, eps=1e-12)
    old_rows = F.normalize(predictor.cls_score.weight[1 : num_old_classes + 1], p=2, dim=1, eps=1e-12)
    return F.linear(x, old_rows)


def distillation_loss(teacher_logits, student_logits, loss_type="l2"):
    """L_kd of B >= 1 boxes from (B, N_old) teacher and student logits.

    "l2" (paper Eq. 2): mean over boxes of ||y_{t-1} - y'_t||_2.
    "squared_sum" (authors' code): sum over boxes and classes of (y_{t-1} - y'_t)^2, divided by B.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "teacher and student logits differ in shape: {} vs {}".format(
                tuple(teacher_logits.shape), tuple(student_logits.shape)
            )
        )
    difference = student_logits - teacher_logits
    if loss_type == "l2":
        return torch.linalg.vector_norm(difference, dim=1).mean()
    if loss_type == "squared_sum":
        return difference.pow(2).sum() / difference.shape[0]
    raise ValueError(
        "unknown distillation loss {!r} (MODEL.LST.DISTILL.LOSS); use one of {}".format(loss_type, LOSS_TYPES)
    )


def new_class_boxes(targets, num_old_classes):
    """Per image, an xyxy BoxList (no fields) of its ground-truth boxes with label > num_old_classes."""
    boxes = []
    for target in targets:
        keep = target.get_field("labels") > num_old_classes
        target = target.convert("xyxy")
        boxes.append(BoxList(target.bbox[keep], target.size, mode="xyxy"))
    return boxes


def check_distillation_student(box_head, num_old_classes):
    """Raise ValueError unless ``box_head`` (a student's ROIBoxHead) can be distilled: a cosine
    predictor with at least ``num_old_classes`` + 1 classifier rows."""
    predictor = getattr(box_head, "predictor", None)
    if not isinstance(predictor, FPNCosinePredictor):
        raise ValueError(
            "knowledge distillation (MODEL.LST.DISTILL.ENABLED) compares cosine logits and needs "
            "MODEL.ROI_BOX_HEAD.PREDICTOR 'FPNCosinePredictor' (with FEATURE_EXTRACTOR "
            "'FPN2MLPCosineFeatureExtractor'); the model's box predictor is {}".format(type(predictor).__name__)
        )
    num_rows = predictor.cls_score.weight.shape[0]
    if num_rows < num_old_classes + 1:
        raise ValueError(
            "the student's classifier has {} rows but distillation needs the {} old classes plus "
            "background: MODEL.ROI_BOX_HEAD.NUM_CLASSES must be at least MODEL.LST.NUM_OLD_CLASSES + 1 "
            "(expand the previous checkpoint with tools/lst_expand.py)".format(num_rows, num_old_classes)
        )


class DistillationTeacher(nn.Module):
    """The frozen previous model theta_{t-1}: backbone, box feature extractor and box predictor.

    State-dict keys are the detector's ("backbone.*", "roi_heads.box.feature_extractor.*",
    "roi_heads.box.predictor.*"), so a detector checkpoint loads as it is. The module always stays
    in eval mode without gradients. It also holds the distillation settings of MODEL.LST.

    Arguments:
        cfg: the teacher's config (NUM_CLASSES = MODEL.LST.NUM_OLD_CLASSES + 1).
    """

    def __init__(self, cfg):
        super(DistillationTeacher, self).__init__()
        self.num_old_classes = cfg.MODEL.LST.NUM_OLD_CLASSES
        self.loss_type = cfg.MODEL.LST.DISTILL.LOSS
        self.loss_weight = cfg.MODEL.LST.DISTILL.WEIGHT
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                "unknown MODEL.LST.DISTILL.LOSS {!r}; use one of {}".format(self.loss_type, LOSS_TYPES)
            )
        self.backbone = build_backbone(cfg)
        feature_extractor = make_roi_box_feature_extractor(cfg, self.backbone.out_channels)
        predictor = make_roi_box_predictor(cfg, feature_extractor.out_channels)
        self.roi_heads = nn.ModuleDict(
            {"box": nn.ModuleDict({"feature_extractor": feature_extractor, "predictor": predictor})}
        )
        check_distillation_student(self.roi_heads["box"], self.num_old_classes)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        """The teacher stays in eval mode whatever ``mode`` says."""
        return super(DistillationTeacher, self).train(False)

    @torch.no_grad()
    def forward(self, image_tensors, boxes):
        """
        Arguments:
            image_tensors (Tensor): (N, 3, H, W) padded images, as the student's backbone gets them.
            boxes (list[BoxList]): N xyxy BoxLists in input-image pixels.

        Returns:
            Tensor: (B, N_old) unscaled old-class cosines y_{t-1} of the B boxes, in order.
        """
        box_head = self.roi_heads["box"]
        features = self.backbone(image_tensors)
        box_features = box_head["feature_extractor"](features, boxes)
        return old_class_cosine(box_head["predictor"], box_features, self.num_old_classes)

    def compute_loss(self, images, features, targets, student_box_head):
        """Weighted L_kd of a training batch (the loss "loss_distill").

        Arguments:
            images (ImageList): the student's batch.
            features (list[Tensor]): the student's backbone feature maps of that batch.
            targets (list[BoxList]): ground truth with the field "labels".
            student_box_head (ROIBoxHead): the student's box head (feature_extractor, predictor).

        Returns:
            Tensor: scalar MODEL.LST.DISTILL.WEIGHT * L_kd over the new-class GT boxes of the
            batch; only images with such boxes run through the teacher. Without any, an exact
            zero still connected to the student's classifier (every process of a distributed run
            then has the same losses and backward calls).
        """
        predictor = student_box_head.predictor
        boxes = new_class_boxes(targets, self.num_old_classes)
        with_boxes = [index for index, boxes_per_image in enumerate(boxes) if len(boxes_per_image) > 0]
        if not with_boxes:
            return predictor.cls_score.weight[:0].sum()

        image_tensors = images.tensors
        self.to(image_tensors.device)
        teacher_logits = self(image_tensors[with_boxes], [boxes[index] for index in with_boxes])
        student_features = student_box_head.feature_extractor(features, boxes)
        student_logits = old_class_cosine(predictor, student_features, self.num_old_classes)
        loss = distillation_loss(teacher_logits.float(), student_logits.float(), self.loss_type)
        return self.loss_weight * loss


def _read_teacher_state_dict(path):
    """The model state dict (without "module.") of the checkpoint file ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "MODEL.LST.DISTILL.TEACHER_WEIGHT {} does not exist: set it to the checkpoint of the "
            "previous phase's model theta_{{t-1}} (e.g. its OUTPUT_DIR/model_final.pth)".format(path)
        )
    checkpoint = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise TypeError("{} holds a {}, not a checkpoint dict".format(path, type(checkpoint).__name__))
    state_dict = checkpoint["model"] if "model" in checkpoint else checkpoint
    return strip_prefix_if_present(state_dict, prefix="module.")


def build_distillation_teacher(cfg):
    """The frozen teacher theta_{t-1} for a student configured by ``cfg``.

    Built from a clone of ``cfg`` with MODEL.ROI_BOX_HEAD.NUM_CLASSES = MODEL.LST.NUM_OLD_CLASSES
    + 1 and distillation disabled; weights from MODEL.LST.DISTILL.TEACHER_WEIGHT, whose
    classifier must have exactly NUM_OLD_CLASSES + 1 rows (the checkpoint before expansion).
    Returned on the CPU; GeneralizedRCNN.set_distillation_teacher moves it to the student's device.
    """
    lst = cfg.MODEL.LST
    if not lst.DISTILL.TEACHER_WEIGHT:
        raise ValueError(
            "MODEL.LST.DISTILL.ENABLED needs MODEL.LST.DISTILL.TEACHER_WEIGHT, the checkpoint of the "
            "previous phase's model theta_{t-1} (before expansion); set it or disable distillation"
        )
    if lst.NUM_OLD_CLASSES <= 0:
        raise ValueError(
            "MODEL.LST.DISTILL.ENABLED needs MODEL.LST.NUM_OLD_CLASSES > 0 (the foreground classes of "
            "theta_{{t-1}}), got {}; distillation only applies to phases t >= 1".format(lst.NUM_OLD_CLASSES)
        )
    teacher_cfg = cfg.clone()
    teacher_cfg.defrost()
    teacher_cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = lst.NUM_OLD_CLASSES + 1
    teacher_cfg.MODEL.LST.DISTILL.ENABLED = False
    teacher_cfg.freeze()
    teacher = DistillationTeacher(teacher_cfg)

    path = lst.DISTILL.TEACHER_WEIGHT
    state_dict = _read_teacher_state_dict(path)
    if CLS_WEIGHT_KEY not in state_dict:
        raise KeyError(
            "{} has no {}: MODEL.LST.DISTILL.TEACHER_WEIGHT must be a detector checkpoint".format(path, CLS_WEIGHT_KEY)
        )
    num_rows = state_dict[CLS_WEIGHT_KEY].shape[0]
    if num_rows != lst.NUM_OLD_CLASSES + 1:
        raise ValueError(
            "{}: {} has {} rows but MODEL.LST.NUM_OLD_CLASSES + 1 = {}; TEACHER_WEIGHT must be the "
            "previous phase's checkpoint before expansion, and NUM_OLD_CLASSES its number of "
            "foreground classes".format(path, CLS_WEIGHT_KEY, num_rows, lst.NUM_OLD_CLASSES + 1)
        )
    missing = sorted(set(teacher.state_dict()) - set(state_dict))
    if missing:
        raise KeyError(
            "{} lacks {} tensor(s) of the teacher, e.g. {}: is it a checkpoint of the same "
            "architecture as this config?".format(path, len(missing), ", ".join(missing[:3]))
        )
    load_state_dict(teacher, state_dict)
    logging.getLogger(__name__).info(
        "Distillation teacher with %d old classes loaded from %s", lst.NUM_OLD_CLASSES, path
    )
    return teacher
