"""What the meta weight generator of an LST phase attends to (the paper's Figure 6).

For each new class of an MWG phase t, the generator's attention coefficients m (softmax over the
b base classes, AttentionBasedGenerator.attention) are computed on the class's support RoIs in
every one of its training images, the same support pass as the phase's final classifier rows
(episodic_trainer.final_novel_weights: test-time transforms, MODEL.FEW_SHOT support RoIs,
FINAL_SUPPORT_PER_CLASS images). A class's attention vector is the mean over its images of the
per-image mean over the RoIs, so the attended term of its final row is exactly W̄_B^T times it.
The vectors are embedded in 2-D with t-SNE (scikit-learn, perplexity min(30, n - 1), seed 0) and
drawn with the class names of the training json.

Inputs: OUT/phase_<t>/config.yml (the phase's config, as tools/lst_phase_config.py writes it),
model_final.pth and weight_generator.pth in OUT/phase_<t> (lst.experiment).
"""
import json
import logging
import os

import numpy as np
import torch
from matplotlib.figure import Figure

from maskrcnn_benchmark.engine.mixed_precision import autocast
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.utils.checkpoint import Checkpointer
from maskrcnn_benchmark.utils.miscellaneous import atomic_open, atomic_write_json

from .episode import load_support_batch, support_roi_features
from .episodic_trainer import make_support_sampler, phase_support_dataset
from .experiment import Experiment
from .phase import ResolvedPhase
from .phase_config import load_yaml_config, train_annotation_file
from .weight_generator import build_weight_generator

logger = logging.getLogger(__name__)

TSNE_MAX_PERPLEXITY = 30
TSNE_SEED = 0
PLOT_DPI = 150


# ----------------------------------------------------------------------------- inputs
def phase_files(experiment_dir, phase):
    """(config.yml, model_final.pth, weight_generator.pth) paths of OUT/phase_<phase>."""
    files = Experiment(experiment_dir).phase(phase)
    return files.config, files.model_final, files.generator


def last_mwg_phase(experiment_dir):
    """The last phase t >= 1 of OUT whose folder holds config.yml, model_final.pth and
    weight_generator.pth; ValueError naming the folder when there is none."""
    for phase in range(Experiment(experiment_dir).last_phase, 0, -1):
        if all(os.path.isfile(path) for path in phase_files(experiment_dir, phase)):
            return phase
    raise ValueError(
        "{} has no finished MWG phase: none of its phase_<t>/ (t >= 1) holds {}; train an "
        "incremental phase with MODEL.FEW_SHOT.ENABLED True first".format(
            experiment_dir, ", ".join(os.path.basename(path) for path in phase_files(experiment_dir, 1))))


def load_mwg_phase(experiment_dir, phase, opts=()):
    """(cfg, detector, generator) of a finished MWG phase, both in eval mode on MODEL.DEVICE.

    ``opts`` (KEY VALUE pairs, e.g. MODEL.DEVICE cpu) override the phase's config.yml.
    """
    config_file, model_file, generator_file = phase_files(experiment_dir, phase)
    missing = [path for path in (config_file, model_file, generator_file) if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            "phase {} of {} is not a finished MWG phase: {} missing (an MWG phase writes model_final.pth "
            "and {}; config.yml comes from tools/lst_phase_config.py)".format(
                phase, experiment_dir, ", ".join(missing), os.path.basename(generator_file)))
    cfg = load_yaml_config(config_file, opts)
    cfg.freeze()
    device = torch.device(cfg.MODEL.DEVICE)
    detector = build_detection_model(cfg).to(device).eval()
    Checkpointer(detector).load(model_file, use_latest=False)
    generator = build_weight_generator(cfg, ResolvedPhase.from_config(cfg).num_base_classes)
    generator.load_state_dict(torch.load(generator_file, map_location=device, weights_only=True))
    return cfg, detector, generator.to(device).eval()


def category_names(train_json):
    """dict category id -> name of the categories of an LVIS-format json."""
    with open(train_json) as f:
        return {category["id"]: category["name"] for category in json.load(f)["categories"]}


# ----------------------------------------------------------------------------- attention
@torch.no_grad()
def support_attention(cfg, detector, generator, images, targets, labels):
    """Per-image mean attention of the support RoIs of each (image, class).

    episode.support_roi_features, then generator.attention instead of the generator's
    forward.

    Returns:
        (kept (list[int]), attention (Tensor[len(kept), b], float32), roi_counts (list[int])):
        the positions in ``labels`` of the images with a box of their class, the mean over each
        one's RoIs of m (rows sum to 1), and the number of RoIs averaged.
    """
    kept, roi_counts, roi_features = support_roi_features(detector, images, targets, labels, cfg.MODEL.FEW_SHOT)
    if not kept:
        return kept, roi_features.new_zeros(0, generator.num_base_classes), []
    attention = generator.attention(roi_features).float()
    means = torch.stack([chunk.mean(dim=0) for chunk in attention.split(roi_counts)])
    return kept, means, roi_counts


def class_attention(cfg, detector, generator, dataset=None):
    """Each new class's attention vector over the b base classes (module docstring).

    Arguments:
        dataset: the phase's training dataset with test-time transforms (built when None).

    Returns:
        dict with "labels" (list[int], the new classes with a support image), "attention"
        (ndarray [len(labels), b], float64, rows sum to 1), "images" and "rois" (list[int]: the
        support images and RoIs per class).
    """
    phase = ResolvedPhase.from_config(cfg)
    dataset = dataset if dataset is not None else phase_support_dataset(cfg, phase)
    sampler = make_support_sampler(cfg, phase, dataset)
    pairs = sampler.all_pairs(cfg.MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS)
    device = torch.device(cfg.MODEL.DEVICE)
    position_of = {label: position for position, label in enumerate(sampler.labels)}
    sums = np.zeros((len(sampler.labels), generator.num_base_classes), dtype=np.float64)
    images, rois = np.zeros(len(sampler.labels), dtype=np.int64), np.zeros(len(sampler.labels), dtype=np.int64)
    batch_size = max(1, cfg.TEST.IMS_PER_BATCH)
    for start in range(0, len(pairs), batch_size):
        batch_pairs = pairs[start:start + batch_size]
        batch_images, targets = load_support_batch(dataset, batch_pairs, cfg.DATALOADER.SIZE_DIVISIBILITY, device)
        labels = [label for label, _ in batch_pairs]
        with autocast(cfg.DTYPE, device):
            kept, attention, roi_counts = support_attention(cfg, detector, generator, batch_images, targets, labels)
        for k, vector, count in zip(kept, attention.cpu().double().numpy(), roi_counts):
            position = position_of[labels[k]]
            sums[position] += vector
            images[position] += 1
            rois[position] += count
    seen = images > 0
    if not seen.all():
        logger.warning("MWG attention: new classes %s have no support RoI in their images; left out",
                       [label for label, ok in zip(sampler.labels, seen) if not ok])
    return {
        "labels": [label for label, ok in zip(sampler.labels, seen) if ok],
        "attention": sums[seen] / images[seen, None],
        "images": images[seen].tolist(),
        "rois": rois[seen].tolist(),
    }


def tsne_embedding(vectors, seed=TSNE_SEED):
    """2-D t-SNE of the rows of ``vectors`` (n, b): ndarray (n, 2).

    Perplexity min(30, n - 1) (t-SNE needs it below n); a single row sits at the origin.
    """
    from sklearn.manifold import TSNE

    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    perplexity = min(TSNE_MAX_PERPLEXITY, len(vectors) - 1)
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors)


# ----------------------------------------------------------------------------- outputs
def plot_attention_tsne(points, names, path, title):
    """Scatter plot of the t-SNE ``points`` (n, 2) labelled with ``names``, saved as a png."""
    figure = Figure(figsize=(9, 8))
    axes = figure.subplots()
    points = np.asarray(points)
    axes.scatter(points[:, 0], points[:, 1], s=18)
    fontsize = 8 if len(names) <= 40 else 5
    for (x, y), name in zip(points, names):
        axes.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=fontsize)
    axes.set_title(title)
    axes.set_xlabel("t-SNE 1")
    axes.set_ylabel("t-SNE 2")
    axes.grid(alpha=0.3)
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=PLOT_DPI, bbox_inches="tight")


def write_attention_tsne(experiment_dir, phase=None, output=None, opts=()):
    """Figure 6 of phase ``phase`` (default: the last finished MWG phase) of ``experiment_dir``.

    Writes ``output`` (default OUT/report/mwg_attention_tsne.png) and the same path with .json:
    the phase, the base classes (label, category id, name) and per new class its label, category
    id, name, support images and RoIs, attention vector (b values, base classes in label order)
    and t-SNE point. Returns that dict.
    """
    phase = last_mwg_phase(experiment_dir) if phase is None else phase
    experiment = Experiment(experiment_dir)
    last_phase = experiment.last_phase
    if not 1 <= phase <= last_phase:
        raise ValueError("phase {} does not exist or has no generator: {} divides the classes into phases "
                         "0..{}, and the meta weight generator trains in phases t >= 1 only".format(
                             phase, experiment.phases_file, last_phase))
    output = output or os.path.join(experiment.report_dir, "mwg_attention_tsne.png")
    cfg, detector, generator = load_mwg_phase(experiment_dir, phase, opts)
    result = class_attention(cfg, detector, generator)
    if not result["labels"]:
        raise ValueError("phase {} of {}: no new class has a support RoI in its training images".format(
            phase, experiment_dir))
    points = tsne_embedding(result["attention"])

    resolved = ResolvedPhase.from_config(cfg)
    category_ids = resolved.seen
    names = category_names(train_annotation_file(cfg))
    base = resolved.num_base_classes
    new_classes = []
    for index, label in enumerate(result["labels"]):
        category_id = category_ids[label - 1]
        new_classes.append({
            "label": label, "category_id": category_id, "name": names.get(category_id, str(category_id)),
            "support_images": result["images"][index], "support_rois": result["rois"][index],
            "attention": result["attention"][index].tolist(), "tsne": points[index].tolist(),
        })
    report = {
        "phase": phase,
        "experiment_dir": os.path.abspath(experiment_dir),
        "perplexity": min(TSNE_MAX_PERPLEXITY, len(new_classes) - 1) if len(new_classes) > 1 else None,
        "seed": TSNE_SEED,
        "base_classes": [{"label": label, "category_id": category_ids[label - 1],
                          "name": names.get(category_ids[label - 1], str(category_ids[label - 1]))}
                         for label in range(1, base + 1)],
        "new_classes": new_classes,
    }
    title = "Phase {}: t-SNE of the MWG attention over the {} base classes ({} new classes)".format(
        phase, base, len(new_classes))
    plot_attention_tsne(points, [entry["name"] for entry in new_classes], output, title)
    atomic_write_json(report, os.path.splitext(output)[0] + ".json")
    return report
