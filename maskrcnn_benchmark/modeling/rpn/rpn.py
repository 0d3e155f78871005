"""Region Proposal Network: head, anchors, proposal selection and losses."""
import torch
import torch.nn.functional as F
from torch import nn

from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.box_coder import BoxCoder

from .anchor_generator import make_anchor_generator
from .inference import make_rpn_postprocessor
from .loss import make_rpn_loss_evaluator


@registry.RPN_HEADS.register("SingleConvRPNHead")
class RPNHead(nn.Module):
    """One shared 3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A deltas,
    applied to every feature level.

    Arguments:
        cfg: config (unused; kept for the registry's builder signature).
        in_channels (int): channels of the input features.
        num_anchors (int): anchors A per feature-map cell.
    """

    def __init__(self, cfg, in_channels, num_anchors):
        super(RPNHead, self).__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1, stride=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1, stride=1)
        for layer in [self.conv, self.cls_logits, self.bbox_pred]:
            torch.nn.init.normal_(layer.weight, std=0.01)
            torch.nn.init.constant_(layer.bias, 0)

    def forward(self, x):
        """
        Arguments:
            x (list[Tensor]): (N, in_channels, H_l, W_l) per level.

        Returns:
            logits (list[Tensor]): (N, A, H_l, W_l) per level.
            bbox_reg (list[Tensor]): (N, 4A, H_l, W_l) per level.
        """
        logits = []
        bbox_reg = []
        for feature in x:
            t = F.relu(self.conv(feature))
            logits.append(self.cls_logits(t))
            bbox_reg.append(self.bbox_pred(t))
        return logits, bbox_reg


class RPNModule(torch.nn.Module):
    """Proposals (and, in training, losses) from backbone features; FPN or single-level.

    Arguments:
        cfg: config (MODEL.RPN, MODEL.RPN_ONLY).
        in_channels (int): channels of the backbone features.
    """

    def __init__(self, cfg, in_channels):
        super(RPNModule, self).__init__()
        self.cfg = cfg.clone()

        anchor_generator = make_anchor_generator(cfg)
        rpn_head = registry.RPN_HEADS[cfg.MODEL.RPN.RPN_HEAD]
        head = rpn_head(cfg, in_channels, anchor_generator.num_anchors_per_location()[0])
        rpn_box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

        self.anchor_generator = anchor_generator
        self.head = head
        self.box_selector_train = make_rpn_postprocessor(cfg, rpn_box_coder, is_train=True)
        self.box_selector_test = make_rpn_postprocessor(cfg, rpn_box_coder, is_train=False)
        self.loss_evaluator = make_rpn_loss_evaluator(cfg, rpn_box_coder)

    def forward(self, images, features, targets=None):
        """
        Arguments:
            images (ImageList): the padded batch (image_sizes used for anchor visibility
                and clipping).
            features (list[Tensor]): (N, C, H_l, W_l) per level.
            targets (list[BoxList], optional): ground truth; required in training.

        Returns:
            boxes (list[BoxList]): proposals per image with the field "objectness" (in
                training with RPN_ONLY, the anchors instead).
            losses (dict[str, Tensor]): "loss_objectness" and "loss_rpn_box_reg" in
                training, empty at test time.
        """
        objectness, rpn_box_regression = self.head(features)
        anchors = self.anchor_generator(images, features)

        if self.training:
            if targets is None:
                raise ValueError(
                    "RPN in training mode needs targets; pass the ground-truth BoxLists "
                    "or call model.eval() for inference"
                )
            return self._forward_train(anchors, objectness, rpn_box_regression, targets)
        return self._forward_test(anchors, objectness, rpn_box_regression)

    def _forward_train(self, anchors, objectness, rpn_box_regression, targets):
        if self.cfg.MODEL.RPN_ONLY:
            # An RPN-only model's loss needs no proposals, so decoding them is skipped.
            boxes = anchors
        else:
            with torch.no_grad():
                boxes = self.box_selector_train(anchors, objectness, rpn_box_regression, targets)
        loss_objectness, loss_rpn_box_reg = self.loss_evaluator(
            anchors, objectness, rpn_box_regression, targets
        )
        losses = {
            "loss_objectness": loss_objectness,
            "loss_rpn_box_reg": loss_rpn_box_reg,
        }
        return boxes, losses

    def _forward_test(self, anchors, objectness, rpn_box_regression):
        boxes = self.box_selector_test(anchors, objectness, rpn_box_regression)
        if self.cfg.MODEL.RPN_ONLY:
            # Proposals are the final output of an RPN-only model: most confident first.
            inds = [box.get_field("objectness").sort(descending=True)[1] for box in boxes]
            boxes = [box[ind] for box, ind in zip(boxes, inds)]
        return boxes, {}


def build_rpn(cfg, in_channels):
    """The RPN of Faster / Mask R-CNN. RetinaNet (MODEL.RETINANET_ON) is not supported."""
    if cfg.MODEL.RETINANET_ON:
        raise NotImplementedError(
            "RetinaNet is not supported in this fork (MODEL.RETINANET_ON is True); "
            "set MODEL.RETINANET_ON False to use the RPN of Faster / Mask R-CNN"
        )
    return RPNModule(cfg, in_channels)
