"""One episode of the meta weight generator's training (paper §3.4): support rows, query, gradients.

Support: the detector's backbone, then its box feature extractor on the support RoIs of each
(image, class) (the class's GT boxes and, optionally, RPN proposals overlapping them) give
(n, d) features, from which the generator writes one classifier row per (image, class),
attending over the base classes' current rows W_B (cls_score rows 1..b, b = |C_0|, not
detached). The support images go through the network MODEL.FEW_SHOT.SUPPORT_CHUNK at a time.

Query: the batch is scored, with all the usual losses, by the classifier whose rows of the
episode's classes (SupportEpisode.labels) are the generated ones
(FPNCosinePredictor.replaced_class_weights; the Mask^X transfer sees them too). With every new
class in the episode (the paper), the R processes generate their shares of the rows and gather
them, differentiably (:class:`GatherRows`), so that every query sees all of W^N.

Gradients of L = (1/R) sum_k L_k (the mean of the processes' query losses, as
DistributedDataParallel defines it), computed outside DDP (its backward runs under ``no_sync``)
and averaged over the processes here, for every parameter of the optimizer (network and
generator): the support passes are outside DDP's forward, and a support row of one process
reaches every process's query. Two ways to the same gradients:

* the joint graph (GRADIENT_CACHE False): the support graphs of all the process's classes are
  kept until the query's backward, so memory grows with the phase size;
* gradient caching (GRADIENT_CACHE True): the rows are generated without a graph, the query's
  backward stops at them (a leaf, dL/dW^N; summed over the processes when gathered), then each
  chunk's support pass is run again with gradient and dL/dW^N of its rows is backpropagated into
  it, one chunk at a time: peak memory is one chunk's graph plus the query's. The support pass
  is deterministic for this: each image's transforms come from its own seed, the support RoIs
  (from the RPN's test-time proposals) found on the first pass are reused, and the backbone and
  box head have no random layer (frozen BatchNorm, no dropout). Under float16 the cached gradient is
  already loss-scaled, like every other gradient of the backward.
"""
import contextlib
import random

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from maskrcnn_benchmark.data.collate_batch import BatchCollator
from maskrcnn_benchmark.engine.mixed_precision import autocast
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.boxlist_ops import boxlist_iou
from maskrcnn_benchmark.utils.comm import get_rank, get_world_size

SUPPORT_IOU_THRESHOLD = 0.5  # proposals this close to a support GT box are support RoIs (authors' matcher)


def unwrap_model(model):
    """The detector inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------- support
def support_rois(target, label, proposals, max_rois, use_proposals=True):
    """The support RoIs of class ``label`` in one image, as an xyxy BoxList without fields.

    Its GT boxes (the first ``max_rois``), then, when ``use_proposals``, the ``proposals``
    (BoxList) with IoU >= 0.5 to one of them, highest IoU first (ties in proposal order), up to
    ``max_rois`` RoIs in all. Empty when the image has no box of ``label``.
    """
    target = target.convert("xyxy")
    gt_boxes = target.bbox[target.get_field("labels") == label][:max_rois]
    boxes = gt_boxes
    if use_proposals and 0 < len(gt_boxes) < max_rois and proposals is not None and len(proposals) > 0:
        overlaps = boxlist_iou(proposals.convert("xyxy"), BoxList(gt_boxes, target.size, mode="xyxy"))
        best_overlap = overlaps.max(dim=1).values
        order = torch.sort(best_overlap, descending=True, stable=True).indices
        order = order[best_overlap[order] >= SUPPORT_IOU_THRESHOLD][: max_rois - len(gt_boxes)]
        boxes = torch.cat([gt_boxes, proposals.convert("xyxy").bbox[order].to(gt_boxes.dtype)], dim=0)
    return BoxList(boxes, target.size, mode="xyxy")


@torch.no_grad()
def test_time_proposals(rpn, images, features):
    """The RPN's test-time proposals (no ground truth added, no loss, no random draw)."""
    was_training = rpn.training
    rpn.eval()
    try:
        proposals, _ = rpn(images, features)
    finally:
        rpn.train(was_training)
    return proposals


def batch_support_rois(detector, images, features, targets, labels, few_shot_cfg):
    """The support RoIs (list[BoxList], one per image) of each (image, class): support_rois with
    the RPN's test-time proposals when MODEL.FEW_SHOT.SUPPORT_PROPOSALS."""
    proposals = [None] * len(labels)
    if few_shot_cfg.SUPPORT_PROPOSALS:
        proposals = test_time_proposals(detector.rpn, images, features)
    return [
        support_rois(target, label, image_proposals, few_shot_cfg.MAX_SUPPORT_ROIS_PER_IMAGE,
                     few_shot_cfg.SUPPORT_PROPOSALS)
        for target, label, image_proposals in zip(targets, labels, proposals)
    ]


def pooled_support_features(detector, features, rois):
    """(kept, roi_counts, features) of support_roi_features from the backbone's ``features`` and
    the support ``rois`` of each image."""
    kept = [position for position, image_rois in enumerate(rois) if len(image_rois) > 0]
    if not kept:
        return kept, [], features[0].new_zeros(0, 0)
    # Every image's list goes to the pooler (its position is the image index); empty ones add no rows.
    roi_features = detector.roi_heads.box.feature_extractor(features, rois).flatten(start_dim=1)
    return kept, [len(rois[position]) for position in kept], roi_features


def support_roi_features(detector, images, targets, labels, few_shot_cfg):
    """The box head's features of the support RoIs of each (image, class).

    Arguments:
        detector (GeneralizedRCNN): unwrapped; its current state (train or eval mode) is used.
        images (ImageList): the K support images (on the detector's device).
        targets (list[BoxList]): their ground truth ("labels").
        labels (list[int]): the support class of each image.
        few_shot_cfg: MODEL.FEW_SHOT (MAX_SUPPORT_ROIS_PER_IMAGE, SUPPORT_PROPOSALS).

    Returns:
        (kept (list[int]), roi_counts (list[int]), features (Tensor[sum(roi_counts), d])): the
        positions in ``labels`` of the images with a box of their class, in order, the number of
        support RoIs of each, and their features, image after image (with gradient when enabled;
        shape (0, 0) when no image is kept). An image without such a box (e.g. all cropped away)
        is left out.
    """
    features = detector.backbone(images.tensors)
    rois = batch_support_rois(detector, images, features, targets, labels, few_shot_cfg)
    return pooled_support_features(detector, features, rois)


def rows_from_features(detector, weight_generator, roi_counts, roi_features, num_base):
    """(len(roi_counts), d) generated rows, one per consecutive group of ``roi_counts`` RoIs of
    ``roi_features``, attending over W_B = cls_score rows 1..b (b = ``num_base``, not detached)."""
    if not roi_counts:
        return roi_features.new_zeros(0, weight_generator.feat_dim)
    groups = torch.repeat_interleave(
        torch.arange(len(roi_counts), device=roi_features.device),
        torch.tensor(roi_counts, device=roi_features.device),
    )
    base_weights = detector.roi_heads.box.predictor.cls_score.weight[1 : num_base + 1]
    return weight_generator(roi_features, base_weights, groups)


def generate_support_weights(detector, weight_generator, images, targets, labels, few_shot_cfg, num_base):
    """One generated classifier row per support (image, class).

    Arguments: as support_roi_features, and
        weight_generator (AttentionBasedGenerator)
        num_base (int): b; W_B = cls_score rows 1..b (not detached).

    Returns:
        (kept (list[int]), weights (Tensor[len(kept), d])): the positions in ``labels`` of the
        images with a box of their class, in order, and their generated rows (with gradient when
        enabled).
    """
    kept, roi_counts, roi_features = support_roi_features(detector, images, targets, labels, few_shot_cfg)
    return kept, rows_from_features(detector, weight_generator, roi_counts, roi_features, num_base)


@contextlib.contextmanager
def seeded_python_random(seed):
    """Python's ``random`` seeded with ``seed`` inside the context, its state restored after it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def load_support_batch(dataset, pairs, size_divisible, device, seeds=None):
    """(ImageList, list[BoxList]) of the images of the (label, dataset index) ``pairs``, on ``device``.

    With ``seeds`` (one int per pair), each image's random transforms (Python's ``random``) are
    drawn from its seed, and the caller's random state is left as it was.
    """
    items = []
    for position, (_, index) in enumerate(pairs):
        with seeded_python_random(seeds[position]) if seeds is not None else contextlib.nullcontext():
            items.append(dataset[index])
    images, targets, _ = BatchCollator(size_divisible)(items)
    return images.to(device), [target.to(device) for target in targets]


# ----------------------------------------------------------------------------- gathering
class GatherRows(torch.autograd.Function):
    """(M, d) rows of each of the R processes -> (R, M, d), differentiably.

    Backward: the gradient of the gathered block is summed over the processes and each process
    keeps its own block, so a process's rows receive the gradient of every process's loss.
    """

    @staticmethod
    def forward(ctx, rows):
        blocks = [torch.empty_like(rows) for _ in range(get_world_size())]
        dist.all_gather(blocks, rows.contiguous())
        return torch.stack(blocks)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[get_rank()]


def gather_rows(share_rows, num_rows):
    """The (num_rows, d) rows of all processes from this process's ``share_rows``, its rows
    being positions rank, rank + R, ... (R = world size) of the result (a collective).

    Differentiable when gradient is enabled; every process must then backpropagate through the
    result (the backward is a collective too).
    """
    world_size = get_world_size()
    per_process = -(-num_rows // world_size)
    padded = torch.cat([share_rows, share_rows.new_zeros(per_process - len(share_rows), share_rows.shape[1])])
    if torch.is_grad_enabled() and not padded.requires_grad:
        padded = padded.detach().requires_grad_()  # so that this process joins the backward's collective
    blocks = GatherRows.apply(padded)  # (R, per_process, d); row m of process r is position m * R + r
    return blocks.transpose(0, 1).reshape(per_process * world_size, -1)[:num_rows]


# ----------------------------------------------------------------------------- gradients
def average_gradients(parameters):
    """All-reduce (average over the processes) the gradients of ``parameters`` (with requires_grad).

    A parameter whose gradient is None on some processes but not on all counts as zero there;
    one that has none anywhere keeps None (the optimizer skips it, as without processes).
    """
    world_size = get_world_size()
    if world_size == 1:
        return
    parameters = [parameter for parameter in parameters if parameter.requires_grad]
    if not parameters:
        return
    has_grad = torch.tensor([parameter.grad is not None for parameter in parameters], dtype=torch.int32,
                            device=parameters[0].device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    parameters = [parameter for parameter, flag in zip(parameters, has_grad.tolist()) if flag]
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    flat = torch.cat([parameter.grad.flatten() for parameter in parameters])
    dist.all_reduce(flat)
    flat /= world_size
    for parameter, grad in zip(parameters, flat.split([p.numel() for p in parameters])):
        parameter.grad.copy_(grad.view_as(parameter))


def no_gradient_sync(model):
    """DistributedDataParallel's ``no_sync`` context for ``model``, or a context doing nothing."""
    return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


class _SupportPass:
    """This process's support images of one episode, run through the detector and the generator
    SUPPORT_CHUNK images at a time (the same chunks every time). A chunk's support RoIs are found
    on its first pass and reused by the next."""

    def __init__(self, cfg, detector, weight_generator, num_base, dataset, episode, device):
        self.cfg, self.detector, self.weight_generator = cfg, detector, weight_generator
        self.num_base, self.dataset, self.episode, self.device = num_base, dataset, episode, device
        chunk = cfg.MODEL.FEW_SHOT.SUPPORT_CHUNK
        self.chunks = [range(start, min(start + chunk, len(episode.pairs)))
                       for start in range(0, len(episode.pairs), chunk)]
        self.rois = {}  # chunk start -> the support RoIs of its images

    def chunk_rows(self, positions):
        """(kept positions (list[int]), rows (Tensor[len(kept), d])) of the pairs at ``positions``."""
        pairs = [self.episode.pairs[p] for p in positions]
        images, targets = load_support_batch(
            self.dataset, pairs, self.cfg.DATALOADER.SIZE_DIVISIBILITY, self.device,
            seeds=[self.episode.seeds[p] for p in positions])
        with autocast(self.cfg.DTYPE, self.device):
            features = self.detector.backbone(images.tensors)
            if positions.start not in self.rois:
                self.rois[positions.start] = batch_support_rois(
                    self.detector, images, features, targets, [label for label, _ in pairs], self.cfg.MODEL.FEW_SHOT)
            kept, roi_counts, roi_features = pooled_support_features(self.detector, features, self.rois[positions.start])
            rows = rows_from_features(self.detector, self.weight_generator, roi_counts, roi_features, self.num_base)
        return [positions[k] for k in kept], rows

    def share_rows(self):
        """(kept positions, generated rows (K, d), share rows (len(pairs), d)): the rows of every
        pair, those without support RoI being the classifier's current rows, detached."""
        classifier = self.detector.roi_heads.box.predictor.cls_score.weight
        labels = torch.tensor([label for label, _ in self.episode.pairs], dtype=torch.int64, device=classifier.device)
        results = [self.chunk_rows(positions) for positions in self.chunks]
        kept = [position for chunk_kept, _ in results for position in chunk_kept]
        generated = torch.cat([rows.to(classifier.dtype) for _, rows in results]) if results else \
            classifier.new_zeros(0, classifier.shape[1])
        stand_ins = classifier.detach()[labels]
        share = stand_ins.index_put((torch.tensor(kept, dtype=torch.int64, device=classifier.device),), generated)
        return kept, generated, share

    def backpropagate(self, share_grad):
        """Run each chunk again with gradient and backpropagate ``share_grad`` (len(pairs), d),
        the loss's gradient of the share rows, into it; one chunk's graph at a time."""
        for positions in self.chunks:
            kept, rows = self.chunk_rows(positions)
            if kept:
                torch.autograd.backward(rows, share_grad[kept].to(rows.dtype))


def episode_step(trainer, weight_generator, num_base, dataset, episode, images, targets):
    """Support rows -> query losses with them -> gradients (module docstring) -> one step.

    Arguments:
        trainer: the Trainer (cfg, model, device, optimizer, optimizer_step).
        weight_generator: its parameters are in trainer.optimizer.
        num_base (int): b.
        dataset: the support images' dataset (training transforms).
        episode (SupportEpisode): this process's support set.
        images (ImageList), targets (list[BoxList]): the query batch, on the device.

    Returns:
        (loss_dict (float32), labels (list[int]), rows (Tensor[len(labels), d], detached)): the
        query losses and the rows this process generated, with their classes.
    """
    cfg, model, device = trainer.cfg, trainer.model, trainer.device
    detector = unwrap_model(model)
    cache = cfg.MODEL.FEW_SHOT.GRADIENT_CACHE
    support = _SupportPass(cfg, detector, weight_generator, num_base, dataset, episode, device)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not cache):
        kept, generated, rows = support.share_rows()
        if episode.gathered:
            rows = gather_rows(rows, len(episode.labels))
    if cache:
        rows = rows.detach().requires_grad_()

    def before_update():
        if cache:
            grad = rows.grad if rows.grad is not None else torch.zeros_like(rows)
            if episode.gathered:
                dist.all_reduce(grad)  # the sum over the processes' losses
                grad = grad[get_rank()::get_world_size()]
            support.backpropagate(grad)
        average_gradients(parameter for group in trainer.optimizer.param_groups for parameter in group["params"])

    with no_gradient_sync(model):
        with autocast(cfg.DTYPE, device), detector.roi_heads.box.predictor.replaced_class_weights(episode.labels, rows):
            loss_dict = model(images, targets)
        loss_dict = trainer.optimizer_step(loss_dict, before_update=before_update)
    labels = [episode.pairs[position][0] for position in kept]
    return loss_dict, labels, generated.detach()
