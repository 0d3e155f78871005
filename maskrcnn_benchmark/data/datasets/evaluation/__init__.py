"""evaluate(): score a model's predictions with the evaluator of the dataset's type."""
from .coco import coco_evaluation
from .lvis import lvis_evaluation

# Dataset class name -> evaluator. Matched along the class's MRO, so subclasses are covered;
# LVISDataset comes first in case it derives from COCODataset.
_EVALUATORS = (("LVISDataset", lvis_evaluation), ("COCODataset", coco_evaluation))


def evaluate(dataset, predictions, output_folder, **kwargs):
    """Evaluate a dataset's predictions with the evaluator of its type.

    Arguments:
        dataset: a COCODataset or an LVISDataset (or a subclass).
        predictions (list[BoxList]): per dataset item, the detections in the network's input size.
        output_folder (str or None): where the results json and metrics.json go.
        **kwargs: passed on (box_only, iou_types, expected_results, expected_results_sigma_tol;
            for LVIS also max_dets, train_annotations, category_groups, category_ids).

    Returns:
        the evaluator's result (see coco_evaluation and lvis_evaluation).
    """
    class_names = [cls.__name__ for cls in type(dataset).__mro__]
    for name, evaluator in _EVALUATORS:
        if name in class_names:
            return evaluator(dataset=dataset, predictions=predictions,
                             output_folder=output_folder, **kwargs)
    raise NotImplementedError("Unsupported dataset type {}; evaluation supports {}".format(
        type(dataset).__name__, ", ".join(name for name, _ in _EVALUATORS)))
