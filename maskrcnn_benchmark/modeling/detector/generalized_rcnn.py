"""Generalized R-CNN: backbone -> RPN -> RoI heads (Faster R-CNN, Mask R-CNN, RPN-only)."""
from torch import nn

from maskrcnn_benchmark.structures.image_list import to_image_list

from ..backbone import build_backbone
from ..roi_heads.roi_heads import build_roi_heads
from ..rpn.rpn import build_rpn


class GeneralizedRCNN(nn.Module):
    """Backbone features, RPN proposals, then box (and mask) heads on the proposals.

    Submodules ``backbone``, ``rpn`` and ``roi_heads`` carry upstream's names, so upstream
    checkpoints load as they are. Extra training losses come from loss hooks
    (:meth:`register_loss_hook`), e.g. LST's knowledge distillation.
    """

    def __init__(self, cfg):
        super(GeneralizedRCNN, self).__init__()
        self.backbone = build_backbone(cfg)
        self.rpn = build_rpn(cfg, self.backbone.out_channels)
        self.roi_heads = build_roi_heads(cfg, self.backbone.out_channels)
        self._loss_hooks = []

    def register_loss_hook(self, hook):
        """Add ``hook(images, features, targets, detector) -> dict[str, Tensor]`` of extra losses,
        called in every training forward after the heads with the batch (ImageList), its backbone
        features, the targets and this detector; its losses join the returned dict.

        Hooks are kept in a plain list, not as submodules: what they hold (a frozen teacher model)
        stays out of state_dict(), parameters(), the optimizer and DistributedDataParallel.
        """
        self._loss_hooks.append(hook)

    @property
    def loss_hooks(self):
        """The registered loss hooks, in order (a tuple)."""
        return tuple(self._loss_hooks)

    def forward(self, images, targets=None):
        """
        Arguments:
            images (list[Tensor] or ImageList): (3, H, W) images, normalised as the config's
                INPUT says; a list is padded into one batch without size divisibility.
            targets (list[BoxList], optional): ground truth per image ("labels", and "masks"
                for Mask R-CNN); required in training.

        Returns:
            In training, dict[str, Tensor] of the losses ("loss_objectness",
            "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"[, "loss_mask"], and the
            loss hooks' losses).
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
            for hook in self._loss_hooks:
                losses.update(hook(images, features, targets, self))
            return losses
        return result
