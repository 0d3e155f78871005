"""Draw a detector's predictions on an image and save it as a PNG.

    python tools/demo.py --config-file CONFIG --ckpt WEIGHTS --image IMAGE --output OUT.png \
        [--confidence-threshold 0.5] [KEY VALUE ...]

Detections scoring above the threshold are drawn as a coloured mask overlay (Mask R-CNN), a box
and "class name: score". Class names come from OUTPUT_DIR/labels.json (written by training),
else from the first DATASETS.TEST dataset's categories, else the labels are shown as numbers.
Without --ckpt the weights are OUTPUT_DIR's last checkpoint, else MODEL.WEIGHT.
"""
# The custom-environment hook runs before anything else is imported (upstream's rule).
from maskrcnn_benchmark.utils.env import setup_environment  # noqa: F401 isort:skip

import argparse
import json
import logging
import os

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import functional as F

from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data.build import build_dataset
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.transforms.transforms import Normalize, Resize
from maskrcnn_benchmark.engine.cli import add_common_arguments, load_config
from maskrcnn_benchmark.engine.mixed_precision import autocast
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import Masker
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer
from maskrcnn_benchmark.utils.logger import setup_logger

MASK_OPACITY = 0.5
# Upstream's colour rule: a label's RGB colour is label * PALETTE modulo 255.
PALETTE = np.array([2 ** 25 - 1, 2 ** 15 - 1, 2 ** 21 - 1], dtype=np.int64)

logger = logging.getLogger("maskrcnn_benchmark.demo")


class Predictor:
    """Runs the detector on single images at the test scale.

    Arguments:
        cfg: frozen config.
        weights (str, optional): checkpoint to load; None loads OUTPUT_DIR's last checkpoint,
            else MODEL.WEIGHT.
        confidence_threshold (float): detections scoring at most this are dropped.
    """

    def __init__(self, cfg, weights=None, confidence_threshold=0.5):
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_detection_model(cfg).to(self.device).eval()
        checkpointer = DetectronCheckpointer(cfg, self.model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.load(weights or cfg.MODEL.WEIGHT, use_latest=weights is None)
        self.resize = Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.normalize = Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255)
        self.masker = Masker(threshold=0.5, padding=1)
        self.confidence_threshold = confidence_threshold

    def __call__(self, image):
        """PIL RGB image -> BoxList in its pixel coordinates, by decreasing score, with "scores",
        "labels" and, for Mask R-CNN, "mask" ((D, 1, H, W) bool masks)."""
        tensor = self.normalize(F.to_tensor(self.resize(image)))
        images = to_image_list(tensor, self.cfg.DATALOADER.SIZE_DIVISIBILITY).to(self.device)
        with torch.no_grad(), autocast(self.cfg.DTYPE, self.device):
            prediction = self.model(images)[0].to(torch.device("cpu"))
        prediction = prediction.resize(image.size)
        scores = prediction.get_field("scores").float()
        keep = torch.nonzero(scores > self.confidence_threshold).squeeze(1)
        prediction = prediction[keep[scores[keep].argsort(descending=True)]]
        if prediction.has_field("mask"):
            prediction.add_field("mask", self.masker([prediction.get_field("mask").float()], [prediction])[0])
        return prediction


def load_class_names(cfg):
    """dict label -> class name (see the module docstring for the sources); {} if none is found."""
    labels_file = os.path.join(cfg.OUTPUT_DIR, "labels.json")
    if os.path.isfile(labels_file):
        with open(labels_file) as f:
            names = list(json.load(f).values())  # category id -> name, in label order
        return {label: name for label, name in enumerate(names, start=1)}
    if cfg.DATASETS.TEST:
        try:
            dataset = build_dataset(cfg.DATASETS.TEST[:1], None, load_dataset_catalog(cfg), is_train=False)[0]
        except (OSError, RuntimeError, ValueError) as error:
            logger.warning("No class names (%s); showing label numbers", error)
            return {}
        return {
            label: dataset.categories[category_id]
            for label, category_id in dataset.contiguous_category_id_to_json_id.items()
        }
    logger.warning("No class names: %s has no labels.json and DATASETS.TEST is empty", cfg.OUTPUT_DIR)
    return {}


def label_colour(label):
    return tuple(int(c) for c in (label * PALETTE) % 255)


def draw_predictions(image, prediction, class_names):
    """A copy of the PIL ``image`` with the masks overlaid, boxes drawn and "name: score" written."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    labels = prediction.get_field("labels").tolist()
    if prediction.has_field("mask"):
        for mask, label in zip(prediction.get_field("mask")[:, 0].numpy().astype(bool), labels):
            pixels[mask] = (1 - MASK_OPACITY) * pixels[mask] + MASK_OPACITY * np.array(label_colour(label))
    result = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(result)
    for box, label, score in zip(prediction.bbox.tolist(), labels, prediction.get_field("scores").tolist()):
        draw.rectangle(box, outline=label_colour(label), width=1)
        draw.text((box[0], box[1]), f"{class_names.get(label, label)}: {score:.2f}", fill=(255, 255, 255))
    return result


def main():
    parser = argparse.ArgumentParser(description="Draw a detector's predictions on an image")
    parser.add_argument(
        "--ckpt", default=None, help="weights to load (default: OUTPUT_DIR's last checkpoint, else MODEL.WEIGHT)"
    )
    parser.add_argument("--image", required=True, help="input image file")
    parser.add_argument("--output", required=True, help="output PNG file")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of a drawn detection")
    add_common_arguments(parser)
    args = parser.parse_args()

    load_config(cfg, args.config_file, args.opts)
    setup_logger("maskrcnn_benchmark", "", 0)
    if not os.path.isfile(args.image):
        raise SystemExit(f"error: image {args.image} does not exist")
    image = Image.open(args.image).convert("RGB")

    prediction = Predictor(cfg, args.ckpt, args.confidence_threshold)(image)
    class_names = load_class_names(cfg)
    for box, label, score in zip(prediction.bbox.tolist(), prediction.get_field("labels").tolist(),
                                 prediction.get_field("scores").tolist()):
        logger.info("%s: %.3f at %s", class_names.get(label, label), score, [round(c, 1) for c in box])
    output_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(output_dir, exist_ok=True)
    draw_predictions(image, prediction, class_names).save(args.output, format="PNG")
    logger.info("%d detections above %.2f drawn into %s", len(prediction), args.confidence_threshold, args.output)


if __name__ == "__main__":
    main()
