"""Turn one image's predicted BoxList into COCO / LVIS json result records.

A record is {"image_id", "category_id", "score"} plus "bbox" ([x, y, w, h] in original-image
pixels, w = x2 - x1 + 1 as BoxList.convert("xywh") gives it) or "segmentation" (compressed RLE
with str counts). Labels are contiguous training labels; ``json_category_ids`` maps them back.
"""
import numpy as np
import pycocotools.mask as mask_utils
import torch


def resize_to_original(prediction, dataset, index):
    """The prediction of dataset item ``index`` resized to the original image's size.

    Returns:
        (BoxList, width, height)
    """
    img_info = dataset.get_img_info(index)
    width, height = img_info["width"], img_info["height"]
    return prediction.resize((width, height)), width, height


def top_scoring(prediction, max_dets):
    """The ``max_dets`` highest-scoring detections of a BoxList (ties keep their order); all of
    them when max_dets < 0."""
    if max_dets < 0 or len(prediction) <= max_dets:
        return prediction
    order = torch.sort(prediction.get_field("scores"), descending=True, stable=True)[1]
    return prediction[order[:max_dets]]


def top_scoring_records(records, max_dets):
    """top_scoring on result records ("image_id", "score"): per image, all of its records when
    it has at most ``max_dets`` (or max_dets < 0), else its ``max_dets`` highest-scoring ones in
    descending score order (ties keep their order); the images in their order of first appearance."""
    if max_dets < 0:
        return records
    by_image = {}
    for record in records:
        by_image.setdefault(record["image_id"], []).append(record)
    return [record for image_records in by_image.values()
            for record in (image_records if len(image_records) <= max_dets
                           else sorted(image_records, key=lambda r: -r["score"])[:max_dets])]


def _base_records(prediction, image_id, json_category_ids):
    scores = prediction.get_field("scores").tolist()
    labels = prediction.get_field("labels").tolist()
    return [{"image_id": image_id, "category_id": json_category_ids[label], "score": score}
            for label, score in zip(labels, scores)]


def box_records(prediction, image_id, json_category_ids):
    """Records with "bbox" of a BoxList already in original-image pixels."""
    records = _base_records(prediction, image_id, json_category_ids)
    for record, box in zip(records, prediction.convert("xywh").bbox.tolist()):
        record["bbox"] = box
    return records


def encode_masks(masks):
    """(N, 1, H, W) bool or {0, 1} masks -> N compressed RLEs with str counts."""
    if len(masks) == 0:
        return []
    stacked = np.asfortranarray(masks[:, 0].permute(1, 2, 0).to(torch.uint8).numpy())
    rles = mask_utils.encode(stacked)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_records(prediction, image_id, json_category_ids):
    """Records with "segmentation" of a BoxList already in original-image pixels.

    The field "mask" holds (N, 1, M, M) probabilities, pasted into the image with
    Masker(threshold=0.5, padding=1), or masks already of the image's size: binary ones are
    used as they are, probabilities are thresholded at 0.5 as the Masker would.
    """
    masks = prediction.get_field("mask")
    width, height = prediction.size
    if tuple(masks.shape[-2:]) != (height, width):
        from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import Masker

        masks = Masker(threshold=0.5, padding=1)([masks], [prediction])[0]
    elif masks.is_floating_point():
        masks = masks > 0.5
    records = _base_records(prediction, image_id, json_category_ids)
    for record, rle in zip(records, encode_masks(masks)):
        record["segmentation"] = rle
    return records
