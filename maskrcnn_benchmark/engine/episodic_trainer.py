"""Episodic training of LST's meta weight generator (MWG) inside an incremental phase (paper §3.4).

One training iteration is one episode:

1. support: E = MODEL.FEW_SHOT.CLASSES_PER_EPISODE new classes of the phase, one training image each
   (SupportSampler); the detector's backbone, then its box feature extractor on the support RoIs
   of each (image, class) (the class's GT boxes and, optionally, RPN proposals overlapping them)
   give (n, d) features, from which the generator writes one classifier row per (image, class),
   attending over the base classes' current rows W_B (cls_score rows 1..b, b = |C_0|);
2. query: the next batch of the ordinary training loader is scored, with all the usual losses
   (distillation included), by the classifier whose rows of the E episode classes are the
   generated ones (FPNCosinePredictor.replaced_class_weights; the Mask^X transfer sees them too);
3. one optimizer step for the network and the generator: the query loss reaches the generator,
   W_B and the support features. The episode's graph is then dropped, so the peak memory grows
   with E and the batch, not with the number of classes of the phase.

SOLVER.MAX_ITER counts episodes; the LR schedule, checkpoints (which carry the generator's state),
resuming and logging work as in ``do_train``. At the end, under no_grad, the generator writes one
row per (support image, class) for every image of every new class (test-time transforms); each
new class's classifier row becomes their mean. The generator is saved to
OUTPUT_DIR/weight_generator.pth (for MODEL.FEW_SHOT.GENERATOR_WEIGHT of the next phase) and
OUTPUT_DIR/model_final.pth is an ordinary detector checkpoint without it.
"""
import contextlib
import logging
import os

import torch
import torch.distributed as dist
from torch.nn import functional as F

from maskrcnn_benchmark.data import lst_phases
from maskrcnn_benchmark.data.build import build_dataset, phase_category_ids
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.collate_batch import BatchCollator
from maskrcnn_benchmark.data.samplers.support_sampler import SupportSampler, class_images
from maskrcnn_benchmark.data.transforms import build_transforms
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import FPNCosinePredictor
from maskrcnn_benchmark.modeling.weight_generator import NovelWeightAccumulator, build_weight_generator
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.boxlist_ops import boxlist_iou
from maskrcnn_benchmark.utils.checkpoint import Checkpointer
from maskrcnn_benchmark.utils.comm import get_rank, get_world_size, is_main_process, synchronize
from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save

from .mixed_precision import autocast
from .trainer import _save_checkpoint, do_train, optimizer_step

GENERATOR_CHECKPOINT_KEY = "weight_generator"  # the generator's entry in intermediate checkpoints
GENERATOR_FILE_NAME = "weight_generator.pth"  # OUTPUT_DIR/<this>: the generator at the end of a phase
# model_final's marker that the new classes' rows are the generated means (a resumed finished phase
# must not recompute them).
FINAL_WEIGHTS_KEY = "novel_weights_generated"
SUPPORT_IOU_THRESHOLD = 0.5  # proposals this close to a support GT box are support RoIs (authors' matcher)


def unwrap_model(model):
    """The detector inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    return model.module if hasattr(model, "module") else model


def num_base_classes(cfg):
    """b = |C_0|: groups[0] of MODEL.LST.PHASES_FILE, or MODEL.LST.BASE_SIZE without a phases file."""
    if cfg.MODEL.LST.PHASES_FILE:
        return len(lst_phases.load_phases(cfg.MODEL.LST.PHASES_FILE)["groups"][0])
    return cfg.MODEL.LST.BASE_SIZE


def new_class_labels(cfg):
    """The labels of the phase's new classes: NUM_OLD_CLASSES + 1 .. NUM_CLASSES - 1."""
    return list(range(cfg.MODEL.LST.NUM_OLD_CLASSES + 1, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES))


def check_episodic_training(cfg, detector):
    """ValueError naming the problem unless MODEL.FEW_SHOT can train ``detector`` (unwrapped):
    an incremental phase (t >= 1) with new classes, an FPNCosinePredictor and 1 <= b <= old classes."""
    lst = cfg.MODEL.LST
    if lst.PHASE < 1 or lst.NUM_OLD_CLASSES < 1:
        raise ValueError(
            "MODEL.FEW_SHOT.ENABLED trains the meta weight generator in incremental phases only, but "
            "MODEL.LST.PHASE is {} and MODEL.LST.NUM_OLD_CLASSES {}; disable it for phase 0 (the base "
            "classes are learnt normally) and use a phase t >= 1 config (tools/lst_phase_config.py)".format(
                lst.PHASE, lst.NUM_OLD_CLASSES)
        )
    if not new_class_labels(cfg):
        raise ValueError(
            "MODEL.FEW_SHOT.ENABLED: the phase has no new class (MODEL.ROI_BOX_HEAD.NUM_CLASSES {} = "
            "MODEL.LST.NUM_OLD_CLASSES + 1)".format(cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)
        )
    roi_heads = detector.roi_heads
    predictor = getattr(roi_heads["box"], "predictor", None) if roi_heads and "box" in roi_heads else None
    if not isinstance(predictor, FPNCosinePredictor):
        raise ValueError(
            "MODEL.FEW_SHOT.ENABLED generates cosine-classifier rows and needs MODEL.ROI_BOX_HEAD.PREDICTOR "
            "'FPNCosinePredictor' (with FEATURE_EXTRACTOR 'FPN2MLPCosineFeatureExtractor'); the model's box "
            "predictor is {}".format(type(predictor).__name__)
        )
    base = num_base_classes(cfg)
    if not 1 <= base <= lst.NUM_OLD_CLASSES:
        raise ValueError(
            "the meta weight generator attends over the b = {} base classes, which must be between 1 and "
            "MODEL.LST.NUM_OLD_CLASSES = {}; check MODEL.LST.BASE_SIZE / PHASES_FILE".format(
                base, lst.NUM_OLD_CLASSES)
        )
    if cfg.MODEL.FEW_SHOT.CLASSES_PER_EPISODE < 1 or cfg.MODEL.FEW_SHOT.MAX_SUPPORT_ROIS_PER_IMAGE < 1:
        raise ValueError(
            "MODEL.FEW_SHOT.CLASSES_PER_EPISODE ({}) and MAX_SUPPORT_ROIS_PER_IMAGE ({}) must be >= 1".format(
                cfg.MODEL.FEW_SHOT.CLASSES_PER_EPISODE, cfg.MODEL.FEW_SHOT.MAX_SUPPORT_ROIS_PER_IMAGE)
        )


def _load_generator_weights(generator, path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "MODEL.FEW_SHOT.GENERATOR_WEIGHT {} does not exist: set it to the previous phase's "
            "OUTPUT_DIR/{}, or to \"\" for a fresh generator".format(path, GENERATOR_FILE_NAME)
        )
    state_dict = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    try:
        generator.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            "MODEL.FEW_SHOT.GENERATOR_WEIGHT {} does not fit this generator (b = {} base classes, d = {}, "
            "MODEL.FEW_SHOT.AFFINE / GENERATOR_TYPE as configured): {}".format(
                path, generator.num_base_classes, generator.feat_dim, error)
        ) from error


def build_episodic_weight_generator(cfg, model, optimizer):
    """The meta weight generator of an MWG phase, ready to train.

    Checks the phase (:func:`check_episodic_training`), builds the generator for b = |C_0| base
    classes, loads MODEL.FEW_SHOT.GENERATOR_WEIGHT when set, moves it to MODEL.DEVICE and adds its
    parameters to ``optimizer`` as one more group (SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY). Call it
    before building the LR scheduler, which must know every group. The generator is not part of
    the model: register it with the checkpointer under GENERATOR_CHECKPOINT_KEY.
    """
    detector = unwrap_model(model)
    check_episodic_training(cfg, detector)
    generator = build_weight_generator(cfg, num_base_classes(cfg))
    if cfg.MODEL.FEW_SHOT.GENERATOR_WEIGHT:
        _load_generator_weights(generator, cfg.MODEL.FEW_SHOT.GENERATOR_WEIGHT)
        logging.getLogger(__name__).info("Weight generator loaded from %s", cfg.MODEL.FEW_SHOT.GENERATOR_WEIGHT)
    generator.to(torch.device(cfg.MODEL.DEVICE))
    optimizer.add_param_group({
        "params": list(generator.parameters()),
        "lr": cfg.SOLVER.BASE_LR,
        "weight_decay": cfg.SOLVER.WEIGHT_DECAY,
    })
    return generator


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
        boxes = torch.cat([gt_boxes, proposals.convert("xyxy").bbox[order]], dim=0)
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
    proposals = [None] * len(labels)
    if few_shot_cfg.SUPPORT_PROPOSALS:
        proposals = test_time_proposals(detector.rpn, images, features)
    rois = [
        support_rois(target, label, image_proposals, few_shot_cfg.MAX_SUPPORT_ROIS_PER_IMAGE,
                     few_shot_cfg.SUPPORT_PROPOSALS)
        for target, label, image_proposals in zip(targets, labels, proposals)
    ]
    kept = [position for position, image_rois in enumerate(rois) if len(image_rois) > 0]
    if not kept:
        return kept, [], features[0].new_zeros(0, 0)
    # Every image's list goes to the pooler (its position is the image index); empty ones add no rows.
    roi_features = detector.roi_heads.box.feature_extractor(features, rois).flatten(start_dim=1)
    return kept, [len(rois[position]) for position in kept], roi_features


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
    if not kept:
        return kept, roi_features.new_zeros(0, weight_generator.feat_dim)
    groups = torch.repeat_interleave(
        torch.arange(len(kept), device=roi_features.device),
        torch.tensor(roi_counts, device=roi_features.device),
    )
    base_weights = detector.roi_heads.box.predictor.cls_score.weight[1 : num_base + 1]
    return kept, weight_generator(roi_features, base_weights, groups)


def load_support_batch(dataset, pairs, size_divisible, device):
    """(ImageList, list[BoxList]) of the images of the (label, dataset index) ``pairs``, on ``device``."""
    images, targets, _ = BatchCollator(size_divisible)([dataset[index] for _, index in pairs])
    return images.to(device), [target.to(device) for target in targets]


def make_support_sampler(cfg, dataset):
    """The phase's SupportSampler over ``dataset``'s new-class images (seed DATALOADER.SEED,
    CLASSES_PER_EPISODE capped at the classes with images)."""
    labels = new_class_labels(cfg)
    images = class_images(dataset, labels)
    without_images = sorted(set(labels) - set(images))
    if without_images:
        logging.getLogger(__name__).warning(
            "MWG: new classes %s have no training image; their classifier rows are trained as ordinary "
            "parameters and not generated", without_images)
    classes_per_episode = min(cfg.MODEL.FEW_SHOT.CLASSES_PER_EPISODE, len(images))
    return SupportSampler(images, classes_per_episode, seed=cfg.DATALOADER.SEED)


# ----------------------------------------------------------------------------- end of phase
def phase_support_dataset(cfg):
    """The training dataset of the phase with test-time transforms (no flip, test sizes)."""
    datasets = build_dataset(cfg.DATASETS.TRAIN, build_transforms(cfg, False), load_dataset_catalog(cfg),
                             is_train=True, category_ids=phase_category_ids(cfg))
    return datasets[0]


@torch.no_grad()
def final_novel_weights(cfg, detector, weight_generator, device, dataset=None):
    """Each new class's mean generated row over its support images (paper §3.4).

    Every process generates the rows of its share of the (class, image) pairs of
    SupportSampler.all_pairs(MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS), TEST.IMS_PER_BATCH / world
    size images at a time, with the detector and generator in eval mode; the sums are reduced
    over the processes.

    Arguments:
        dataset: the phase's training dataset with test-time transforms (built when None).

    Returns:
        (labels (list[int]), weights (Tensor[len(labels), d], float32)): every process the same.
    """
    dataset = dataset if dataset is not None else phase_support_dataset(cfg)
    sampler = make_support_sampler(cfg, dataset)
    pairs = sampler.all_pairs(cfg.MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS)[get_rank()::get_world_size()]
    images_per_batch = max(1, cfg.TEST.IMS_PER_BATCH // get_world_size())
    position_of = {label: position for position, label in enumerate(sampler.labels)}
    accumulator = NovelWeightAccumulator(len(sampler.labels), weight_generator.feat_dim).to(device)
    num_base = num_base_classes(cfg)
    modes = detector.training, weight_generator.training
    detector.eval()
    weight_generator.eval()
    try:
        for start in range(0, len(pairs), images_per_batch):
            batch_pairs = pairs[start:start + images_per_batch]
            images, targets = load_support_batch(dataset, batch_pairs, cfg.DATALOADER.SIZE_DIVISIBILITY, device)
            labels = [label for label, _ in batch_pairs]
            with autocast(cfg.DTYPE, device):
                kept, weights = generate_support_weights(
                    detector, weight_generator, images, targets, labels, cfg.MODEL.FEW_SHOT, num_base)
            if kept:
                positions = torch.tensor([position_of[labels[k]] for k in kept], dtype=torch.int64)
                accumulator.add(positions, weights.float())
    finally:
        detector.train(modes[0])
        weight_generator.train(modes[1])
    if get_world_size() > 1:
        dist.all_reduce(accumulator.weight_sum)
        dist.all_reduce(accumulator.count)
    return sampler.labels, accumulator.mean()


@torch.no_grad()
def set_class_weights(detector, labels, weights):
    """Write ``weights`` (K, d) into the box classifier rows ``labels``."""
    classifier = detector.roi_heads.box.predictor.cls_score.weight
    index = torch.tensor(labels, dtype=torch.int64, device=classifier.device)
    classifier.index_copy_(0, index, weights.to(device=classifier.device, dtype=classifier.dtype))


def _log_agreement(logger, episode_accumulator, labels, final_weights):
    """Log the mean cosine between the final rows and the mean rows generated during the episodes."""
    seen = episode_accumulator.count > 0
    if not bool(seen.any()):
        return
    episode_means = (episode_accumulator.weight_sum[seen] / episode_accumulator.count[seen].unsqueeze(1)).float()
    cosine = F.cosine_similarity(episode_means, final_weights.to(episode_means.device)[seen], dim=1)
    logger.info(
        "MWG: final rows of %d new classes written; mean cosine with the rows generated in this run's "
        "episodes %.4f (%d classes, %d episode rows)",
        len(labels), cosine.mean().item(), int(seen.sum()), int(episode_accumulator.count.sum()),
    )


def _final_checkpointer(checkpointer):
    """A Checkpointer like ``checkpointer`` but without the generator (for model_final)."""
    extras = {name: obj for name, obj in checkpointer.extra_checkpointables.items()
              if name != GENERATOR_CHECKPOINT_KEY}
    return Checkpointer(checkpointer.model, checkpointer.optimizer, checkpointer.scheduler,
                        checkpointer.save_dir, checkpointer.save_to_disk, checkpointer.logger, **extras)


# ----------------------------------------------------------------------------- training
def _average_generator_gradients(weight_generator):
    """All-reduce (average) the generator's gradients: it is outside DistributedDataParallel."""
    world_size = get_world_size()
    if world_size == 1:
        return
    parameters = list(weight_generator.parameters())
    for parameter in parameters:
        if parameter.grad is None:  # no support RoI on this process in this episode
            parameter.grad = torch.zeros_like(parameter)
    flat = torch.cat([parameter.grad.flatten() for parameter in parameters])
    dist.all_reduce(flat)
    flat /= world_size
    for parameter, grad in zip(parameters, flat.split([p.numel() for p in parameters])):
        parameter.grad.copy_(grad.view_as(parameter))


def episode_step(cfg, model, weight_generator, support, images, targets, optimizer, scaler, device, iteration):
    """Support -> generated rows -> query losses with those rows -> one step.

    ``support`` is (support images, support targets, support labels). Returns the (float32) loss
    dict and (labels (list[int]), detached generated rows) of the episode.
    """
    detector = unwrap_model(model)
    predictor = detector.roi_heads.box.predictor
    support_images, support_targets, support_labels = support
    with autocast(cfg.DTYPE, device):
        kept, weights = generate_support_weights(
            detector, weight_generator, support_images, support_targets, support_labels,
            cfg.MODEL.FEW_SHOT, num_base_classes(cfg))
        labels = [support_labels[k] for k in kept]
        replacement = predictor.replaced_class_weights(labels, weights) if kept else contextlib.nullcontext()
        with replacement:
            loss_dict = model(images, targets)
    loss_dict = optimizer_step(loss_dict, optimizer, scaler, cfg, device, iteration,
                               before_update=lambda: _average_generator_gradients(weight_generator))
    return loss_dict, labels, weights.detach()


def do_episodic_train(
    cfg,
    model,
    weight_generator,
    data_loader,
    data_loader_val,
    optimizer,
    scheduler,
    checkpointer,
    device,
    checkpoint_period,
    test_period,
    arguments,
    scaler=None,
):
    """``do_train`` with one MWG episode per iteration, then the final novel rows (module docstring).

    Arguments are those of do_train, plus ``weight_generator`` (from
    :func:`build_episodic_weight_generator`, registered with ``checkpointer`` under
    GENERATOR_CHECKPOINT_KEY). The query batches come from ``data_loader``; the support images from
    its dataset. Writes model_{iteration:07d}.pth (with the generator), then
    OUTPUT_DIR/weight_generator.pth and model_final.pth (without it).
    """
    logger = logging.getLogger("maskrcnn_benchmark.trainer")
    detector = unwrap_model(model)
    if arguments.pop(FINAL_WEIGHTS_KEY, False):
        logger.info("The phase is finished: model_final holds the generated novel rows already")
        return
    logger.info("Start episodic training of the meta weight generator")
    support_sampler = make_support_sampler(cfg, data_loader.dataset)
    position_of = {label: position for position, label in enumerate(support_sampler.labels)}
    episode_accumulator = NovelWeightAccumulator(len(support_sampler.labels), weight_generator.feat_dim)

    def episode(iteration, images, targets):
        pairs = support_sampler.episode(iteration - 1)
        support_images, support_targets = load_support_batch(
            data_loader.dataset, pairs, cfg.DATALOADER.SIZE_DIVISIBILITY, device)
        support = (support_images, support_targets, [label for label, _ in pairs])
        loss_dict, labels, weights = episode_step(
            cfg, model, weight_generator, support, images, targets, optimizer, scaler, device, iteration)
        if labels:
            positions = torch.tensor([position_of[label] for label in labels], dtype=torch.int64)
            episode_accumulator.add(positions, weights.float().cpu())
        return loss_dict

    weight_generator.train()
    do_train(cfg, model, data_loader, data_loader_val, optimizer, scheduler, checkpointer, device,
             checkpoint_period, test_period, arguments, scaler=scaler, step=episode,
             log_prefix=["episodic"], save_final=False)
    labels, final_weights = final_novel_weights(cfg, detector, weight_generator, device)
    set_class_weights(detector, labels, final_weights)
    _log_agreement(logger, episode_accumulator, labels, final_weights)
    if is_main_process() and cfg.OUTPUT_DIR:
        generator_file = os.path.join(cfg.OUTPUT_DIR, GENERATOR_FILE_NAME)
        atomic_torch_save(weight_generator.state_dict(), generator_file)
        logger.info("Saved the weight generator to %s", generator_file)
    synchronize()
    arguments[FINAL_WEIGHTS_KEY] = True
    _save_checkpoint(_final_checkpointer(checkpointer), "model_final", arguments)
    del arguments[FINAL_WEIGHTS_KEY]
