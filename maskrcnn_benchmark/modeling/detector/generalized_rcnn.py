"""Generalized R-CNN: backbone -> RPN -> RoI heads (Faster R-CNN, Mask R-CNN, RPN-only)."""
from torch import nn

from maskrcnn_benchmark.structures.image_list import to_image_list

from ..backbone import build_backbone
from ..roi_heads.box_head.distillation import check_distillation_student
from ..roi_heads.roi_heads import build_roi_heads
from ..rpn.rpn import build_rpn


class GeneralizedRCNN(nn.Module):
    """Backbone features, RPN proposals, then box (and mask) heads on the proposals.

    Submodules ``backbone``, ``rpn`` and ``roi_heads`` carry upstream's names, so upstream
    checkpoints load as they are. In LST's incremental phases a frozen distillation teacher
    (theta_{t-1}) may be attached with :meth:`set_distillation_teacher`; training then adds
    "loss_distill".
    """

    def __init__(self, cfg):
        super(GeneralizedRCNN, self).__init__()
        self.backbone = build_backbone(cfg)
        self.rpn = build_rpn(cfg, self.backbone.out_channels)
        self.roi_heads = build_roi_heads(cfg, self.backbone.out_channels)
        self._distillation_teacher = None

    @property
    def distillation_teacher(self):
        """The attached DistillationTeacher, or None."""
        return self._distillation_teacher

    def set_distillation_teacher(self, teacher):
        """Attach the frozen teacher theta_{t-1} (a DistillationTeacher), or detach it with None.

        The teacher is stored as a plain attribute, not a submodule, so it stays out of
        state_dict(), parameters(), the optimizer and DistributedDataParallel. It is moved to this
        model's device now and follows the batch's device in every training forward.
        Raises ValueError when this model's box head cannot be distilled (see
        check_distillation_student).
        """
        if teacher is not None:
            if not self.roi_heads or "box" not in self.roi_heads:
                raise ValueError("knowledge distillation needs a box head; MODEL.RPN_ONLY models have none")
            check_distillation_student(self.roi_heads.box, teacher.num_old_classes)
            teacher.to(next(self.parameters()).device)
        # object.__setattr__ bypasses nn.Module's registration of submodules.
        object.__setattr__(self, "_distillation_teacher", teacher)

    def forward(self, images, targets=None):
        """
        Arguments:
            images (list[Tensor] or ImageList): (3, H, W) images, normalised as the config's
                INPUT says; a list is padded into one batch without size divisibility.
            targets (list[BoxList], optional): ground truth per image ("labels", and "masks"
                for Mask R-CNN); required in training.

        Returns:
            In training, dict[str, Tensor] of the losses ("loss_objectness",
            "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"[, "loss_mask"][,
            "loss_distill" with a distillation teacher]).
            At test time, list[BoxList]: per image, detections in the coordinates of the
            input batch, with "scores", "labels" (and "mask"), or proposals with
            "objectness" for an RPN-only model.
        """
        if self.training and targets is None:
            raise ValueError(
                "In training mode, targets should be passed; call model.eval() for inference"
            )
        images = to_image_list(images)
        features = self.backbone(images.tensors)
        proposals, proposal_losses = self.rpn(images, features, targets)
        if self.roi_heads:
            _, result, detector_losses = self.roi_heads(features, proposals, targets)
        else:
            result = proposals
            detector_losses = {}

        if self.training:
            losses = {}
            losses.update(detector_losses)
            losses.update(proposal_losses)
            if self._distillation_teacher is not None:
                losses["loss_distill"] = self._distillation_teacher.compute_loss(
                    images, features, targets, self.roi_heads.box
                )
            return losses
        return result
