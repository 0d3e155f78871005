"""Episodic training of LST's meta weight generator (MWG) inside an incremental phase (paper §3.4).

One training iteration is one episode (maskrcnn_benchmark/lst/episode.py):

1. support: by default (MODEL.FEW_SHOT.CLASSES_PER_EPISODE 0, the paper) every new class of the
   phase with one training image (SupportSampler), split over the processes; the generator
   writes one classifier row per (image, class) from the features of its support RoIs,
   attending over the base classes' current rows W_B (cls_score rows 1..b, b = |C_0|), and the
   processes gather the rows, so that all of W^N is generated. With CLASSES_PER_EPISODE E > 0
   (this project's variant), each process generates the rows of E classes only;
2. query: the next batch of the ordinary training loader is scored, with all the usual losses
   (distillation included), by the classifier whose new rows are the generated ones;
3. one optimizer step for the network and the generator: the query loss reaches the generator,
   W_B and the support features. MODEL.FEW_SHOT.GRADIENT_CACHE computes the same gradients at
   a memory that does not grow with the number of classes.

``EpisodicTrainer`` is the engine's Trainer with this episode as its step. SOLVER.MAX_ITER counts
episodes; the LR schedule, checkpoints (which carry the generator's state), resuming and logging
work as in ``do_train``. At the end (the ``FinalNovelWeights`` hook), under no_grad, the generator
writes one row per (support image, class) for every image of every new class (test-time
transforms); each new class's classifier row becomes their mean over the class's instances (an
image's row counts once per instance of the class in it). The generator is saved to the
phase's weight_generator.pth (MODEL.FEW_SHOT.GENERATOR_WEIGHT of the next phase) and
model_final.pth is an ordinary detector checkpoint without it. A run whose last checkpoint is
model_final is finished: resuming it changes nothing.
"""
import logging
import os

import torch
import torch.distributed as dist
from torch.nn import functional as F

from maskrcnn_benchmark.data.build import build_dataset, sampler_seed
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.transforms import build_transforms
from maskrcnn_benchmark.engine.mixed_precision import autocast
from maskrcnn_benchmark.engine.trainer import HookBase, Trainer
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import FPNCosinePredictor
from maskrcnn_benchmark.utils.comm import get_rank, get_world_size, is_main_process, synchronize
from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save

from .episode import episode_step, generate_support_weights, load_support_batch, unwrap_model
from .experiment import GENERATOR_FILE_NAME, MODEL_FINAL_FILE_NAME
from .support_sampler import SupportSampler, class_images
from .weight_generator import NovelWeightAccumulator, build_weight_generator

GENERATOR_CHECKPOINT_KEY = "weight_generator"  # the generator's entry in intermediate checkpoints


def check_episodic_training(cfg, phase, detector):
    """ValueError naming the problem unless MODEL.FEW_SHOT can train ``detector`` (unwrapped) in
    ``phase`` (a ResolvedPhase): an incremental phase (t >= 1) with new classes and an
    FPNCosinePredictor."""
    if phase is None or phase.index < 1:
        raise ValueError(
            "MODEL.FEW_SHOT.ENABLED trains the meta weight generator in incremental phases only, but "
            "{}; disable it for phase 0 (the base classes are learnt normally) and use a phase t >= 1 "
            "config (tools/lst_phase_config.py)".format(
                "MODEL.LST.PHASES_FILE is not set" if phase is None else "MODEL.LST.PHASE is 0")
        )
    roi_heads = detector.roi_heads
    predictor = getattr(roi_heads["box"], "predictor", None) if roi_heads and "box" in roi_heads else None
    if not isinstance(predictor, FPNCosinePredictor):
        raise ValueError(
            "MODEL.FEW_SHOT.ENABLED generates cosine-classifier rows and needs MODEL.ROI_BOX_HEAD.PREDICTOR "
            "'FPNCosinePredictor' (with FEATURE_EXTRACTOR 'FPN2MLPCosineFeatureExtractor'); the model's box "
            "predictor is {}".format(type(predictor).__name__)
        )
    few_shot = cfg.MODEL.FEW_SHOT
    if few_shot.CLASSES_PER_EPISODE < 0:
        raise ValueError("MODEL.FEW_SHOT.CLASSES_PER_EPISODE is {}; set it to 0 (every new class, the paper) or "
                         "to a positive number of classes".format(few_shot.CLASSES_PER_EPISODE))
    if few_shot.MAX_SUPPORT_ROIS_PER_IMAGE < 1 or few_shot.SUPPORT_CHUNK < 1:
        raise ValueError(
            "MODEL.FEW_SHOT.MAX_SUPPORT_ROIS_PER_IMAGE ({}) and SUPPORT_CHUNK ({}) must be >= 1".format(
                few_shot.MAX_SUPPORT_ROIS_PER_IMAGE, few_shot.SUPPORT_CHUNK)
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


def build_episodic_weight_generator(cfg, phase, model, optimizer):
    """The meta weight generator of an MWG phase, ready to train.

    Checks the phase (:func:`check_episodic_training`), builds the generator for b = |C_0| base
    classes, loads MODEL.FEW_SHOT.GENERATOR_WEIGHT when set, moves it to MODEL.DEVICE and adds its
    parameters to ``optimizer`` as one more group (SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY). Call it
    before building the LR scheduler, which must know every group. The generator is not part of
    the model: register it with the checkpointer under GENERATOR_CHECKPOINT_KEY.
    """
    detector = unwrap_model(model)
    check_episodic_training(cfg, phase, detector)
    generator = build_weight_generator(cfg, phase.num_base_classes)
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
def make_support_sampler(cfg, phase, dataset):
    """The SupportSampler of ``phase`` over ``dataset``'s new-class images (seed: sampler_seed,
    CLASSES_PER_EPISODE, 0 = all, capped at the classes with images)."""
    labels = phase.new_labels
    images = class_images(dataset, labels)
    without_images = sorted(set(labels) - set(images))
    if without_images:
        logging.getLogger(__name__).warning(
            "MWG: new classes %s have no training image; their classifier rows are trained as ordinary "
            "parameters and not generated", without_images)
    classes_per_episode = min(cfg.MODEL.FEW_SHOT.CLASSES_PER_EPISODE, len(images))  # 0 stays 0: all
    return SupportSampler(images, classes_per_episode, seed=sampler_seed(cfg))


# ----------------------------------------------------------------------------- end of phase
def phase_support_dataset(cfg, phase):
    """The training dataset of ``phase`` with test-time transforms (no flip, test sizes)."""
    datasets = build_dataset(cfg.DATASETS.TRAIN, build_transforms(cfg, False), load_dataset_catalog(cfg),
                             is_train=True, category_ids=phase.seen)
    return datasets[0]


@torch.no_grad()
def final_novel_weights(cfg, phase, detector, weight_generator, device, dataset=None):
    """Each new class's mean generated row over its instances (paper §3.4: "averaging the
    predicted weights of all the instances of class c in D_t").

    The generator writes one row per (image, class) (paper Eq. 3, averaged over the class's RoIs
    in the image); the class's final row is their mean weighted by the number of the class's
    instances (GT boxes) in each image, i.e. the mean over its instances of the row of the
    instance's image. Every process generates the rows of its share of the (class, image) pairs of
    SupportSampler.all_pairs(MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS), TEST.IMS_PER_BATCH / world
    size images at a time, with the detector and generator in eval mode; the sums are reduced
    over the processes.

    Arguments:
        dataset: the phase's training dataset with test-time transforms (built when None).

    Returns:
        (labels (list[int]), weights (Tensor[len(labels), d], float32)): every process the same.
    """
    dataset = dataset if dataset is not None else phase_support_dataset(cfg, phase)
    sampler = make_support_sampler(cfg, phase, dataset)
    pairs = sampler.all_pairs(cfg.MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS)[get_rank()::get_world_size()]
    images_per_batch = max(1, cfg.TEST.IMS_PER_BATCH // get_world_size())
    position_of = {label: position for position, label in enumerate(sampler.labels)}
    accumulator = NovelWeightAccumulator(len(sampler.labels), weight_generator.feat_dim).to(device)
    num_base = phase.num_base_classes
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
                instances = torch.tensor([int((targets[k].get_field("labels") == labels[k]).sum()) for k in kept])
                accumulator.add(positions, weights.float(), instances)
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


# ----------------------------------------------------------------------------- training
class EpisodicTrainer(Trainer):
    """The Trainer whose step is one MWG episode (module docstring).

    Arguments are the Trainer's, plus ``weight_generator`` (from
    :func:`build_episodic_weight_generator`, registered with the checkpointer under
    GENERATOR_CHECKPOINT_KEY) and ``phase`` (the ResolvedPhase). The query batches come from
    ``data_loader``, the support images from its dataset. Register ``FinalNovelWeights`` (not
    the engine's FinalCheckpointer) to end the phase.
    """

    def __init__(self, cfg, model, weight_generator, phase, data_loader, optimizer, scheduler, checkpointer,
                 device, arguments):
        super().__init__(cfg, model, data_loader, optimizer, scheduler, checkpointer, device, arguments,
                         log_prefix=["episodic"])
        self.weight_generator = weight_generator
        self.phase = phase
        self.support_sampler = make_support_sampler(cfg, phase, data_loader.dataset)
        self._position_of = {label: position for position, label in enumerate(self.support_sampler.labels)}
        # The mean rows generated in this run's episodes, to compare with the final ones.
        self.episode_weights = NovelWeightAccumulator(len(self.support_sampler.labels), weight_generator.feat_dim)

    def train(self):
        self.logger.info("Start episodic training of the meta weight generator")
        self.weight_generator.train()
        super().train()

    def run_step(self, images, targets):
        episode = self.support_sampler.episode(self.iter - 1)
        loss_dict, labels, weights = episode_step(
            self, self.weight_generator, self.phase.num_base_classes, self.data_loader.dataset, episode,
            images, targets)
        if labels:
            positions = torch.tensor([self._position_of[label] for label in labels], dtype=torch.int64)
            self.episode_weights.add(positions, weights.float().cpu())
        return loss_dict


class FinalNovelWeights(HookBase):
    """End of an MWG phase: each new class's row becomes its mean generated row (final_novel_weights),
    the generator is written to OUTPUT_DIR/weight_generator.pth, then model_final (without it).

    Nothing is done when the run resumed from its own model_final (the phase is finished).
    """

    def before_train(self):
        trainer = self.trainer
        last = trainer.checkpointer.get_checkpoint_file() if trainer.checkpointer.has_checkpoint() else ""
        self.finished = trainer.start_iter >= trainer.max_iter and os.path.basename(last) == MODEL_FINAL_FILE_NAME
        if self.finished:
            trainer.logger.info("The phase is finished: model_final holds the generated novel rows already")

    def after_train(self):
        if self.finished:
            return
        trainer = self.trainer
        detector = unwrap_model(trainer.model)
        labels, final_weights = final_novel_weights(
            trainer.cfg, trainer.phase, detector, trainer.weight_generator, trainer.device)
        set_class_weights(detector, labels, final_weights)
        _log_agreement(trainer.logger, trainer.episode_weights, labels, final_weights)
        output_dir = trainer.cfg.OUTPUT_DIR
        if is_main_process() and output_dir:
            generator_file = os.path.join(output_dir, GENERATOR_FILE_NAME)
            atomic_torch_save(trainer.weight_generator.state_dict(), generator_file)
            trainer.logger.info("Saved the weight generator to %s", generator_file)
        synchronize()
        trainer.save_checkpoint("model_final", skip=(GENERATOR_CHECKPOINT_KEY,))
