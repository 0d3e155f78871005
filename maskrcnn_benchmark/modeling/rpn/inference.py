"""RPN post-processing: turns objectness and deltas into proposals for the RoI heads."""
import torch

from maskrcnn_benchmark.modeling.box_coder import BoxCoder
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.boxlist_ops import boxlist_nms, cat_boxlist, remove_small_boxes

from .utils import permute_and_flatten


class RPNPostProcessor(torch.nn.Module):
    """Selects proposals, per level and image: sigmoid, top pre_nms_top_n, decode, clip,
    remove small boxes, NMS keeping post_nms_top_n. With several levels (FPN), then keeps
    the top fpn_post_nms_top_n: per image at test time, and in training over the whole
    batch when fpn_post_nms_per_batch (Detectron's behaviour, upstream issue #672), else
    per image. In training, the ground-truth boxes are appended to each image's proposals.

    Arguments:
        pre_nms_top_n (int): top-scoring anchors decoded per level and image.
        post_nms_top_n (int): proposals kept per level and image after NMS.
        nms_thresh (float): IoU threshold of the NMS.
        min_size (int): smallest proposal side (pixels, +1 widths) kept.
        box_coder (BoxCoder): decodes deltas; (1, 1, 1, 1) weights by default.
        fpn_post_nms_top_n (int): proposals kept after merging the levels; defaults to
            post_nms_top_n.
        fpn_post_nms_per_batch (bool): in training, count fpn_post_nms_top_n over the batch.
    """

    def __init__(
        self,
        pre_nms_top_n,
        post_nms_top_n,
        nms_thresh,
        min_size,
        box_coder=None,
        fpn_post_nms_top_n=None,
        fpn_post_nms_per_batch=True,
    ):
        super(RPNPostProcessor, self).__init__()
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        if box_coder is None:
            box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.box_coder = box_coder
        if fpn_post_nms_top_n is None:
            fpn_post_nms_top_n = post_nms_top_n
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.fpn_post_nms_per_batch = fpn_post_nms_per_batch

    def add_gt_proposals(self, proposals, targets):
        """Append each image's ground-truth boxes (objectness 1, no other field).

        Arguments:
            proposals (list[BoxList]): xyxy proposals with the field "objectness".
            targets (list[BoxList]): ground truth of each image.
        """
        device = proposals[0].bbox.device
        gt_boxes = [target.convert("xyxy").copy_with_fields([]) for target in targets]
        for gt_box in gt_boxes:
            gt_box.add_field("objectness", torch.ones(len(gt_box), device=device))
        return [
            cat_boxlist((proposal, gt_box)) for proposal, gt_box in zip(proposals, gt_boxes)
        ]

    def forward_for_single_feature_map(self, anchors, objectness, box_regression):
        """
        Arguments:
            anchors (list[BoxList]): this level's anchors of each image.
            objectness (Tensor): (N, A, H, W) logits.
            box_regression (Tensor): (N, A * 4, H, W) deltas.

        Returns:
            list[BoxList]: per image, at most post_nms_top_n proposals with "objectness".
        """
        device = objectness.device
        N, A, H, W = objectness.shape

        objectness = permute_and_flatten(objectness, N, A, 1, H, W).view(N, -1).sigmoid()
        box_regression = permute_and_flatten(box_regression, N, A, 4, H, W)

        pre_nms_top_n = min(self.pre_nms_top_n, A * H * W)
        objectness, topk_idx = objectness.topk(pre_nms_top_n, dim=1, sorted=True)

        batch_idx = torch.arange(N, device=device)[:, None]
        box_regression = box_regression[batch_idx, topk_idx]

        image_shapes = [box.size for box in anchors]
        concat_anchors = torch.cat([a.bbox for a in anchors], dim=0)
        concat_anchors = concat_anchors.reshape(N, -1, 4)[batch_idx, topk_idx]

        proposals = self.box_coder.decode(box_regression.view(-1, 4), concat_anchors.view(-1, 4))
        proposals = proposals.view(N, -1, 4)

        result = []
        for proposal, score, im_shape in zip(proposals, objectness, image_shapes):
            boxlist = BoxList(proposal, im_shape, mode="xyxy")
            boxlist.add_field("objectness", score)
            boxlist = boxlist.clip_to_image(remove_empty=False)
            boxlist = remove_small_boxes(boxlist, self.min_size)
            boxlist = boxlist_nms(
                boxlist,
                self.nms_thresh,
                max_proposals=self.post_nms_top_n,
                score_field="objectness",
            )
            result.append(boxlist)
        return result

    def forward(self, anchors, objectness, box_regression, targets=None):
        """
        Arguments:
            anchors (list[list[BoxList]]): anchors[image][level].
            objectness (list[Tensor]): (N, A, H_l, W_l) per level.
            box_regression (list[Tensor]): (N, A * 4, H_l, W_l) per level.
            targets (list[BoxList], optional): ground truth, appended in training.

        Returns:
            list[BoxList]: proposals of each image, with the field "objectness".
        """
        sampled_boxes = []
        num_levels = len(objectness)
        anchors_per_level = list(zip(*anchors))
        for a, o, b in zip(anchors_per_level, objectness, box_regression):
            sampled_boxes.append(self.forward_for_single_feature_map(a, o, b))

        boxlists = [cat_boxlist(per_image) for per_image in zip(*sampled_boxes)]
        if num_levels > 1:
            boxlists = self.select_over_all_levels(boxlists)

        if self.training and targets is not None:
            boxlists = self.add_gt_proposals(boxlists, targets)
        return boxlists

    def select_over_all_levels(self, boxlists):
        """Keep the fpn_post_nms_top_n most confident proposals, per image or per batch.

        Per batch, the kept proposals stay in their original order; per image, they are
        sorted by decreasing objectness (as upstream).
        """
        num_images = len(boxlists)
        if self.training and self.fpn_post_nms_per_batch:
            objectness = torch.cat([boxlist.get_field("objectness") for boxlist in boxlists], dim=0)
            box_sizes = [len(boxlist) for boxlist in boxlists]
            post_nms_top_n = min(self.fpn_post_nms_top_n, len(objectness))
            _, inds_sorted = torch.topk(objectness, post_nms_top_n, dim=0, sorted=True)
            inds_mask = torch.zeros_like(objectness, dtype=torch.bool)
            inds_mask[inds_sorted] = True
            inds_mask = inds_mask.split(box_sizes)
            for i in range(num_images):
                boxlists[i] = boxlists[i][inds_mask[i]]
        else:
            for i in range(num_images):
                objectness = boxlists[i].get_field("objectness")
                post_nms_top_n = min(self.fpn_post_nms_top_n, len(objectness))
                _, inds_sorted = torch.topk(objectness, post_nms_top_n, dim=0, sorted=True)
                boxlists[i] = boxlists[i][inds_sorted]
        return boxlists


def make_rpn_postprocessor(config, rpn_box_coder, is_train):
    """RPNPostProcessor from MODEL.RPN, with the *_TRAIN or *_TEST top-n values."""
    rpn_cfg = config.MODEL.RPN
    if is_train:
        pre_nms_top_n = rpn_cfg.PRE_NMS_TOP_N_TRAIN
        post_nms_top_n = rpn_cfg.POST_NMS_TOP_N_TRAIN
        fpn_post_nms_top_n = rpn_cfg.FPN_POST_NMS_TOP_N_TRAIN
    else:
        pre_nms_top_n = rpn_cfg.PRE_NMS_TOP_N_TEST
        post_nms_top_n = rpn_cfg.POST_NMS_TOP_N_TEST
        fpn_post_nms_top_n = rpn_cfg.FPN_POST_NMS_TOP_N_TEST
    return RPNPostProcessor(
        pre_nms_top_n=pre_nms_top_n,
        post_nms_top_n=post_nms_top_n,
        nms_thresh=rpn_cfg.NMS_THRESH,
        min_size=rpn_cfg.MIN_SIZE,
        box_coder=rpn_box_coder,
        fpn_post_nms_top_n=fpn_post_nms_top_n,
        fpn_post_nms_per_batch=rpn_cfg.FPN_POST_NMS_PER_BATCH,
    )
