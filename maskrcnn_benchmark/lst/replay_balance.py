"""The class balance a BalancedReplaySampler's epochs give the RoI heads (paper §3.3: every old
class should be trained on about n̄_c instances per epoch, as many as a mean new class).

An instance of class j in an entry (image, active label a) is trained by the RoI heads (the
RoIs matched to it are box-head and mask positives, as many as the RoI sampler draws) when a is
0 or j, or whatever a is when MODEL.LST.ROI_ACTIVE_CLASS_ONLY is off; the RPN sees every box
either way. The new-class entries are the same in every epoch. The replayed images of old class k
change from epoch to epoch, but they run through successive permutations of k's images, so on
average over the epochs the replay of k contributes exactly q_k / |images of k| times the sum
over k's images. The counts here are these means per epoch, for both MODEL.LST.NEW_IMAGE_LABELS
modes; they depend on the dataset, the quotas and the modes, not on the seed.
"""
import logging
import statistics
from collections import Counter
from fractions import Fraction

from maskrcnn_benchmark.utils.comm import is_main_process
from maskrcnn_benchmark.utils.miscellaneous import atomic_write_json

from .experiment import replay_balance_file

logger = logging.getLogger(__name__)

TOP_OLD_CLASSES = 3


def dataset_image_instances(dataset):
    """Per dataset index, {training label: instances} of that image (no image is loaded)."""
    if not hasattr(dataset, "get_category_instance_counts"):
        raise TypeError(
            "{} has no get_category_instance_counts(index), which the replay balance needs; "
            "COCODataset, LVISDataset and ConcatDataset provide it.".format(type(dataset).__name__))
    return [dataset.get_category_instance_counts(i) for i in range(len(dataset))]


def trained_instances(instances, active_label, active_class_only=True):
    """{label: instances the RoI heads train on} of one entry: ``instances`` ({label: count} of
    the image) restricted to ``active_label`` when it is > 0 and ``active_class_only``."""
    if active_label == 0 or not active_class_only:
        return instances
    return {active_label: instances.get(active_label, 0)}


def trained_per_epoch(sampler, image_instances, new_image_labels, active_class_only=True):
    """{label: Fraction}: instances per class that the RoI heads train on per epoch of
    ``sampler`` (mean over epochs), had its new-class images been labelled ``new_image_labels``.

    Arguments:
        sampler (BalancedReplaySampler): gives the entries of every epoch, the replayed classes
            and their quotas.
        image_instances (list[dict]): dataset_image_instances of the sampler's dataset.
    """
    totals = Counter()
    for index, active in zip(*sampler.fixed_entries(new_image_labels)):
        totals.update(trained_instances(image_instances[index], active, active_class_only))
    positives = {label: Fraction(count) for label, count in totals.items()}
    for label, images in sampler.class_to_images.items():
        replayed = Counter()
        for index in images:
            replayed.update(trained_instances(image_instances[index], label, active_class_only))
        share = Fraction(sampler.quotas[label], len(images))
        for trained_label, count in replayed.items():
            positives[trained_label] = positives.get(trained_label, Fraction(0)) + share * count
    return positives


def replay_balance(sampler, dataset, active_class_only=True):
    """The balance of ``sampler``'s epochs over ``dataset`` (its training dataset), as written
    to replay_balance.json: the modes, the entries per epoch and, per class (by label), its
    category, group ("old" / "new"), training instances and trained instances per epoch under
    each NEW_IMAGE_LABELS mode."""
    image_instances = dataset_image_instances(dataset)
    training = Counter()
    for instances in image_instances:
        training.update(instances)
    modes = sampler.new_image_label_modes
    positives = {mode: trained_per_epoch(sampler, image_instances, mode, active_class_only) for mode in modes}
    replayed = sum(sampler.quotas.values())
    entries = {mode: len(sampler.fixed_entries(mode)[0]) + replayed for mode in modes}
    new_labels = [label for label in sorted(training) if label > sampler.num_old_classes]
    names = getattr(dataset, "categories", {})
    to_category = getattr(dataset, "contiguous_category_id_to_json_id", {})
    classes = []
    for label in sorted(training):
        category_id = to_category.get(label, label)
        classes.append({
            "label": label,
            "category_id": category_id,
            "name": names.get(category_id, str(category_id)),
            "group": "new" if label > sampler.num_old_classes else "old",
            "training_instances": training[label],
            "trained_per_epoch": {mode: round(float(positives[mode].get(label, 0)), 3)
                                  for mode in modes},
        })
    return {
        "replay": sampler.mode,
        "new_image_labels": sampler.new_image_labels,
        "roi_active_class_only": bool(active_class_only),
        "num_old_classes": sampler.num_old_classes,
        "n_c": round(sum(training[label] for label in new_labels) / len(new_labels), 3),
        "entries_per_epoch": entries,
        "classes": classes,
    }


def _spread(values):
    if not values:
        return "-"
    return "{:.1f} / {:.1f} / {:.1f}".format(min(values), statistics.median(values), max(values))


def summary_lines(balance):
    """The balance in a few lines: per NEW_IMAGE_LABELS mode, the entries per epoch, min / median /
    max trained instances per epoch of the new and of the old classes, and the old classes with
    the most."""
    lines = ["Replay balance (MODEL.LST.REPLAY {!r}): instances the RoI heads train on per epoch "
             "(mean over epochs); intended level n_c = {:.1f}".format(balance["replay"], balance["n_c"])]
    new = [c for c in balance["classes"] if c["group"] == "new"]
    old = [c for c in balance["classes"] if c["group"] == "old"]
    for mode, entries in balance["entries_per_epoch"].items():
        most = sorted(old, key=lambda c: (-c["trained_per_epoch"][mode], c["label"]))[:TOP_OLD_CLASSES]
        lines.append(
            "  NEW_IMAGE_LABELS {!r}{}: {} entries; new classes min / median / max {}; old classes {}; "
            "most: {}".format(
                mode, " (this run)" if mode == balance["new_image_labels"] else "", entries,
                _spread([c["trained_per_epoch"][mode] for c in new]),
                _spread([c["trained_per_epoch"][mode] for c in old]),
                ", ".join("{} {:.1f}".format(c["name"], c["trained_per_epoch"][mode]) for c in most)))
    return lines


def report_replay_balance(sampler, dataset, active_class_only, output_dir):
    """Log the summary of ``sampler``'s balance and, on the main process with an ``output_dir``,
    write the whole of it to the phase's replay_balance.json."""
    balance = replay_balance(sampler, dataset, active_class_only)
    for line in summary_lines(balance):
        logger.info(line)
    if output_dir and is_main_process():
        path = replay_balance_file(output_dir)
        atomic_write_json(balance, path)
        logger.info("Replay balance per class written to %s", path)
    return balance
