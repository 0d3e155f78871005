"""Inference over a test data loader: batched forward passes, gathering on the main process, evaluation.

Every process runs its share of the test set; the predictions, keyed by dataset index, are
gathered on rank 0 only, put in dataset order, saved as ``predictions.pth`` and passed to
``data.datasets.evaluation.evaluate``.
"""
import logging
import os
from collections import OrderedDict

import torch
from tqdm import tqdm

from maskrcnn_benchmark.data import check_num_classes, make_data_loader
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.datasets.evaluation import evaluate
from maskrcnn_benchmark.modeling.roi_heads.box_head.calibration import calibrate_box_head
from maskrcnn_benchmark.utils.comm import gather, get_world_size, is_main_process, synchronize
from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save, atomic_write_json, mkdir
from maskrcnn_benchmark.utils.timer import Timer, get_time_str

from .mixed_precision import autocast


def _to_float32(prediction):
    """The BoxList with its box coordinates and floating-point fields in float32 (autocast may give half)."""
    prediction.bbox = prediction.bbox.float()
    for field in prediction.fields():
        value = prediction.get_field(field)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            prediction.add_field(field, value.float())
    return prediction


def compute_on_dataset(model, data_loader, device, timer=None, dtype="float32"):
    """Run ``model`` in eval mode over ``data_loader``.

    Arguments:
        model (nn.Module): returns one BoxList per image.
        data_loader: yields (ImageList, targets, dataset indices).
        device (torch.device)
        timer (Timer, optional): times the forward passes (model-only time).
        dtype (str): DTYPE; "float16"/"bfloat16" run under autocast.

    Returns dict[int, BoxList]: dataset index -> prediction on the CPU, in float32.
    """
    model.eval()
    results = {}
    cpu_device = torch.device("cpu")
    for images, _, image_ids in tqdm(data_loader, disable=not is_main_process()):
        with torch.no_grad(), autocast(dtype, device):
            if timer:
                timer.tic()
            output = model(images.to(device))
            if timer:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timer.toc()
        results.update(
            (image_id, _to_float32(prediction.to(cpu_device)))
            for image_id, prediction in zip(image_ids, output)
        )
    return results


def _accumulate_predictions_from_multiple_gpus(predictions_per_gpu, num_images):
    """Gather every process's {index: BoxList} on rank 0 and return them as a list in index order.

    A distributed sampler pads the last shard with repeated indices, which collapse here, so each
    image appears once. Returns None on the other ranks.
    """
    gathered = gather(predictions_per_gpu)
    if not is_main_process():
        return None
    predictions = {}
    for per_gpu in gathered:
        predictions.update(per_gpu)
    image_ids = sorted(predictions)
    if image_ids != list(range(num_images)):
        logging.getLogger("maskrcnn_benchmark.inference").warning(
            "Gathered predictions for %d of the %d images (indices are not 0..%d); the missing "
            "images are left out of the evaluation",
            len(image_ids), num_images, num_images - 1,
        )
    return [predictions[i] for i in image_ids]


def inference(
    model,
    data_loader,
    dataset_name,
    iou_types=("bbox",),
    box_only=False,
    bbox_aug=False,
    device="cuda",
    expected_results=(),
    expected_results_sigma_tol=4,
    output_folder=None,
    dtype="float32",
    evaluation_options=None,
):
    """Predict on the whole test set, then evaluate on the main process.

    Arguments:
        model (nn.Module): the detector (not wrapped in DistributedDataParallel is best).
        data_loader: a test loader of make_data_loader(is_train=False).
        dataset_name (str): for the log.
        iou_types (tuple[str]): "bbox" and/or "segm".
        box_only (bool): the model outputs proposals (RPN only): evaluate proposal recall.
        bbox_aug (bool): test-time augmentation, which this fork does not build (must be False).
        device (str or torch.device)
        expected_results, expected_results_sigma_tol: TEST.EXPECTED_RESULTS(_SIGMA_TOL), checked
            by the evaluation.
        output_folder (str, optional): where predictions.pth and the evaluation files go.
        dtype (str): DTYPE; "float16"/"bfloat16" run the model under autocast.
        evaluation_options (dict, optional): extra keyword arguments of the dataset's evaluator
            (for LVIS: max_dets, train_annotations, category_groups, fixed_ap_dets_per_class,
            inference_dets_per_img).

    Returns the evaluation result on rank 0, None on the other ranks.
    """
    if bbox_aug:
        raise NotImplementedError(
            "TEST.BBOX_AUG (test-time augmentation) is not built in this fork; set "
            "TEST.BBOX_AUG.ENABLED False"
        )
    device = torch.device(device)
    num_devices = get_world_size()
    logger = logging.getLogger("maskrcnn_benchmark.inference")
    dataset = data_loader.dataset
    logger.info("Start evaluation on %s dataset(%d images).", dataset_name, len(dataset))
    total_timer = Timer()
    inference_timer = Timer()
    total_timer.tic()
    predictions = compute_on_dataset(model, data_loader, device, inference_timer, dtype)
    synchronize()  # all processes done before measuring the time
    total_time = total_timer.toc()
    logger.info(
        "Total run time: %s (%s s / img per device, on %d devices)",
        get_time_str(total_time), total_time * num_devices / len(dataset), num_devices,
    )
    logger.info(
        "Model inference time: %s (%s s / img per device, on %d devices)",
        get_time_str(inference_timer.total_time),
        inference_timer.total_time * num_devices / len(dataset), num_devices,
    )

    predictions = _accumulate_predictions_from_multiple_gpus(predictions, len(dataset))
    if not is_main_process():
        return None
    if output_folder:
        atomic_torch_save(predictions, os.path.join(output_folder, "predictions.pth"))
    return evaluate(
        dataset=dataset,
        predictions=predictions,
        output_folder=output_folder,
        box_only=box_only,
        iou_types=iou_types,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
        **(evaluation_options or {}),
    )


def lvis_evaluation_options(cfg, category_ids=None, category_groups=None):
    """LVIS evaluator options from the config: TEST.LVIS_MAX_DETS detections per image, the
    training annotations (for the paper's instance-count bins) when DATASETS.TRAIN is one
    dataset, and, when given, the only categories evaluated (``category_ids``, e.g. an LST
    phase's seen classes) and named AP groups of them (``category_groups``, e.g. "old", "new",
    "all"); with TEST.LVIS_FIXED_AP, Fixed AP at TEST.LVIS_FIXED_AP_DETS_PER_CLASS (its log told
    the inference's MODEL.ROI_HEADS.DETECTIONS_PER_IMG)."""
    options = {"max_dets": cfg.TEST.LVIS_MAX_DETS}
    if cfg.TEST.LVIS_FIXED_AP:
        options["fixed_ap_dets_per_class"] = cfg.TEST.LVIS_FIXED_AP_DETS_PER_CLASS
        options["inference_dets_per_img"] = cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG
    if category_ids is not None:
        options["category_ids"] = list(category_ids)
    if category_groups is not None:
        options["category_groups"] = {name: list(ids) for name, ids in category_groups.items()}
    train_annotations = training_annotations_file(cfg)
    if train_annotations is not None:
        options["train_annotations"] = train_annotations
    return options


def training_annotations_file(cfg):
    """The annotation json of DATASETS.TRAIN when it is one dataset whose file exists, else None."""
    if len(cfg.DATASETS.TRAIN) != 1:
        return None
    catalog = load_dataset_catalog(cfg)
    train_annotations = catalog.get(cfg.DATASETS.TRAIN[0])["args"]["ann_file"]
    return train_annotations if os.path.isfile(train_annotations) else None


def iou_types_of(cfg):
    """The evaluation types of the config's model: ("bbox",), plus "segm" for Mask R-CNN."""
    return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)


def run_test(cfg, model, distributed, category_ids=None, category_groups=None):
    """Evaluate ``model`` on every DATASETS.TEST entry, writing to OUTPUT_DIR/inference/<name>/.

    TEST.CALIBRATION.GAMMA > 0 sets NorCal on the box head (its N_j from DATASETS.TRAIN), 0 clears it.

    ``category_ids`` restricts the datasets (and the evaluation) to those categories, in label
    order; ``category_groups`` adds the AP of named groups of them (LVIS evaluation).

    Returns the evaluation results (one per dataset) on rank 0, Nones on the other ranks.
    """
    if distributed and hasattr(model, "module"):
        model = model.module
    if torch.device(cfg.MODEL.DEVICE).type == "cuda":
        torch.cuda.empty_cache()
    dataset_names = cfg.DATASETS.TEST
    output_folders = [None] * len(dataset_names)
    if cfg.OUTPUT_DIR:
        for idx, dataset_name in enumerate(dataset_names):
            output_folders[idx] = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
            mkdir(output_folders[idx])
    data_loaders_val = make_data_loader(cfg, is_train=False, is_distributed=distributed, category_ids=category_ids)
    check_num_classes(cfg, [loader.dataset for loader in data_loaders_val], dataset_names)
    results = []
    for output_folder, dataset_name, data_loader_val in zip(output_folders, dataset_names, data_loaders_val):
        calibrate_box_head(model, cfg, data_loader_val.dataset,
                           training_annotations_file(cfg) if cfg.TEST.CALIBRATION.GAMMA > 0 else None)
        results.append(
            inference(
                model,
                data_loader_val,
                dataset_name=dataset_name,
                iou_types=iou_types_of(cfg),
                box_only=cfg.MODEL.RPN_ONLY,
                bbox_aug=cfg.TEST.BBOX_AUG.ENABLED,
                device=cfg.MODEL.DEVICE,
                expected_results=cfg.TEST.EXPECTED_RESULTS,
                expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
                output_folder=output_folder,
                dtype=cfg.DTYPE,
                evaluation_options=(
                    lvis_evaluation_options(cfg, category_ids, category_groups)
                    if type(data_loader_val.dataset).__name__ == "LVISDataset" else None
                ),
            )
        )
        synchronize()
    return results


def choose_calibration_gamma(cfg, model, distributed, gammas, **evaluation_options):
    """NorCal's gamma by grid search: the one of ``gammas`` with the highest AP on DATASETS.TEST.

    Our procedure (NorCal's code takes gamma as given): DATASETS.TEST is one LVIS-format set of
    training images (a held-out part of the training set where there is one); each gamma is
    evaluated with run_test into OUTPUT_DIR/calibration/gamma_<repr(gamma)>/; the metric is mask
    AP (box AP without MODEL.MASK_ON); ties go to the smaller gamma. Writes
    OUTPUT_DIR/calibration_gamma.json {"metric", "dataset", "AP": {repr(gamma): AP}, "gamma"}.

    Returns the chosen gamma on rank 0, None on the other ranks.
    """
    if len(cfg.DATASETS.TEST) != 1:
        raise ValueError("choosing TEST.CALIBRATION.GAMMA needs one DATASETS.TEST dataset (training "
                         "images), got {}".format(list(cfg.DATASETS.TEST)))
    iou_type = iou_types_of(cfg)[-1]
    scores = OrderedDict()
    for gamma in sorted(set(float(g) for g in gammas)):
        trial = cfg.clone()
        trial.defrost()
        trial.TEST.CALIBRATION.GAMMA = gamma
        trial.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "calibration", "gamma_{!r}".format(gamma))
        (result,) = run_test(trial, model, distributed, **evaluation_options)
        if result is not None:
            scores[gamma] = float(result[0][iou_type]["AP"])
    if not is_main_process():
        return None
    best = max(scores, key=lambda g: (scores[g], -g))
    logging.getLogger("maskrcnn_benchmark.inference").info(
        "NorCal gamma by %s AP on %s: %s -> TEST.CALIBRATION.GAMMA %r", iou_type,
        cfg.DATASETS.TEST[0], ", ".join("{!r}: {:.4f}".format(g, v) for g, v in scores.items()), best)
    atomic_write_json({"metric": iou_type + " AP", "dataset": cfg.DATASETS.TEST[0],
                       "AP": {repr(g): v for g, v in scores.items()}, "gamma": best},
                      os.path.join(cfg.OUTPUT_DIR, "calibration_gamma.json"))
    return best
