"""The box head (Fast R-CNN): feature extractor + predictor, with its loss and post-processor."""
import torch

from .classification_losses import make_classification_loss
from .inference import make_roi_box_post_processor
from .loss import make_roi_box_loss_evaluator
from .roi_box_feature_extractors import make_roi_box_feature_extractor
from .roi_box_predictors import make_roi_box_predictor


class ROIBoxHead(torch.nn.Module):
    """Classifies the proposals and refines their boxes.

    Arguments:
        cfg: config (MODEL.ROI_BOX_HEAD, MODEL.ROI_HEADS); MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS
            picks the classification loss and the matching test-time scores.
        in_channels (int): channels of the backbone features.
    """

    def __init__(self, cfg, in_channels):
        super(ROIBoxHead, self).__init__()
        self.feature_extractor = make_roi_box_feature_extractor(cfg, in_channels)
        self.predictor = make_roi_box_predictor(cfg, self.feature_extractor.out_channels)
        # MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS: a module (its running statistics are buffers,
        # saved with the model) whose scores() the post-processor uses.
        self.classification_loss = make_classification_loss(cfg)
        self.post_processor = make_roi_box_post_processor(cfg, self.classification_loss.scores)
        self.loss_evaluator = make_roi_box_loss_evaluator(cfg, self.classification_loss)

    def forward(self, features, proposals, targets=None):
        """
        Arguments:
            features (list[Tensor]): (N, C, H_l, W_l) feature maps.
            proposals (list[BoxList]): proposals of each image.
            targets (list[BoxList], optional): ground truth; required in training.

        Returns:
            x (Tensor): the extractor's features of the RoIs.
            proposals (list[BoxList]): in training the sampled proposals (with "labels" and
                "regression_targets"), at test time the detections (with "scores", "labels").
            losses (dict[str, Tensor]): "loss_classifier" and "loss_box_reg" in training,
                empty at test time.
        """
        if self.training:
            with torch.no_grad():
                proposals = self.loss_evaluator.subsample(proposals, targets)

        x = self.feature_extractor(features, proposals)
        class_logits, box_regression = self.predictor(x)

        if not self.training:
            result = self.post_processor((class_logits, box_regression), proposals)
            return x, result, {}

        loss_classifier, loss_box_reg = self.loss_evaluator([class_logits], [box_regression])
        return x, proposals, dict(loss_classifier=loss_classifier, loss_box_reg=loss_box_reg)


def build_roi_box_head(cfg, in_channels):
    """The box head of Faster / Mask R-CNN."""
    return ROIBoxHead(cfg, in_channels)
