"""COCO-format instance datasets.

``JsonDetectionDataset`` holds what COCODataset and LVISDataset share: validating the annotation
JSON, cleaning the annotations once at load time (with counted, logged skips), the contiguous
label space, and building the (image, BoxList target, index) samples. ``COCODataset`` adds the
pycocotools index, crowd filtering and COCO's file_name image paths.

Boxes follow maskrcnn-benchmark's conventions: JSON boxes are [x, y, w, h] in pixels and become
inclusive xyxy corners [x, y, x + w - 1, y + h - 1] (BoxList's "xywh" -> "xyxy" conversion).
"""
import json
import logging
import os
from collections import Counter

import torch
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

logger = logging.getLogger(__name__)

# Keys every record of each section must have (image path keys are checked per format).
REQUIRED_KEYS = {
    "images": ("id", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}

# Reasons an annotation, a polygon or an image is dropped at load time, as logged.
SKIP_REASONS = {
    "empty_box": "annotations with a zero or negative box width/height",
    "bad_polygon": "polygons with fewer than 3 points or an odd number of coordinates",
    "no_polygon": "annotations left with no valid polygon",
    "rle_segmentation": "non-crowd annotations with an RLE segmentation (only polygons are read)",
    "image_without_annotations": "training images without a valid annotation",
}


def load_annotation_json(ann_file, format_name, image_path_keys):
    """Read a COCO/LVIS annotation file and check its structure.

    Arguments:
        ann_file (str): path of the JSON file.
        format_name (str): "COCO" or "LVIS", used in error messages.
        image_path_keys (tuple[str]): an image record needs at least one of these keys.

    Returns the parsed dict. Raises FileNotFoundError for a missing file and ValueError naming
    the file and the missing key for a JSON that is not in the format.
    """
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(
            "Annotation file {} not found; check the dataset's ann_file in the DatasetCatalog "
            "(paths are relative to DatasetCatalog.DATA_DIR).".format(ann_file)
        )
    with open(ann_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError("{} is not valid JSON: {}".format(ann_file, error)) from error

    def not_the_format(problem):
        return ValueError(
            "{} is not a {} annotation file: {}".format(ann_file, format_name, problem)
        )

    if not isinstance(data, dict):
        raise not_the_format(
            "expected a JSON object with keys {}, got a {}".format(
                sorted(REQUIRED_KEYS), type(data).__name__
            )
        )
    for section, record_keys in REQUIRED_KEYS.items():
        if section not in data:
            raise not_the_format("missing key '{}'".format(section))
        for position, record in enumerate(data[section]):
            for key in record_keys:
                if key not in record:
                    raise not_the_format(
                        "{} record {} (id {}) lacks key '{}'".format(
                            section, position, record.get("id", "?"), key
                        )
                    )
    for image in data["images"]:
        if not any(key in image for key in image_path_keys):
            raise not_the_format(
                "image record id {} has none of the keys {}".format(
                    image["id"], " / ".join(repr(k) for k in image_path_keys)
                )
            )
    return data


def _valid_polygons(segmentation):
    """The polygons of a segmentation with at least 3 points and an even number of coordinates,
    and how many were dropped."""
    kept = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
    return kept, len(segmentation) - len(kept)


def has_valid_annotation(annotations):
    """Upstream's training-image rule: at least one annotation, and not all of them have a
    width or height of at most 1 pixel."""
    if len(annotations) == 0:
        return False
    return not all(any(side <= 1 for side in a["bbox"][2:]) for a in annotations)


class JsonDetectionDataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO-style JSON file.

    Subclasses build the annotation API (``_build_api``), choose the default label order
    (``_default_category_order``), locate image files (``_image_path``) and tell crowd
    annotations apart (``_is_crowd``).

    Arguments:
        ann_file (str): annotation JSON.
        root (str): image folder.
        remove_images_without_annotations (bool): keep only images with at least one valid
            annotation (training).
        transforms (callable): applied to (PIL image, BoxList target).
        category_ids (list[int] or None): the categories of the label space, in label order
            (label = 1 + position); annotations of other categories are ignored. None: all
            categories in ``_default_category_order``.

    Attributes:
        ids (list[int]): image ids of the dataset, sorted; index i is image ids[i].
        id_to_img_map (dict[int, int]): index -> image id.
        json_category_id_to_contiguous_id / contiguous_category_id_to_json_id (dict[int, int]):
            category id <-> training label in 1..C.
        categories (dict[int, str]): category id -> name, for the categories of the label space.
        load_stats (Counter): how many annotations/polygons/images were skipped, by reason
            (keys of SKIP_REASONS).
    """

    FORMAT_NAME = "COCO"
    IMAGE_PATH_KEYS = ("file_name",)

    def __init__(
        self, ann_file, root, remove_images_without_annotations, transforms=None, category_ids=None
    ):
        self.ann_file = ann_file
        self.root = root
        self._transforms = transforms

        data = load_annotation_json(ann_file, self.FORMAT_NAME, self.IMAGE_PATH_KEYS)
        self._images = {image["id"]: image for image in data["images"]}
        category_names = {category["id"]: category["name"] for category in data["categories"]}
        self._check_references(data["annotations"], category_names)

        label_order = self._label_order(category_names, data["categories"], category_ids)
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(label_order)}
        self.contiguous_category_id_to_json_id = {
            label: c for c, label in self.json_category_id_to_contiguous_id.items()
        }
        self.categories = {c: category_names[c] for c in label_order}

        self._has_masks = any("segmentation" in a for a in data["annotations"])
        self.load_stats = Counter()
        self._annotations = self._clean_annotations(data["annotations"])

        self.ids = sorted(self._images)
        if remove_images_without_annotations:
            # Judged on the cleaned annotations: unlike upstream, an image with only crowd
            # annotations is dropped (it would reach the model with no ground truth).
            self.ids = [i for i in self.ids if has_valid_annotation(self._annotations[i])]
            self.load_stats["image_without_annotations"] = len(self._images) - len(self.ids)
        self.id_to_img_map = dict(enumerate(self.ids))

        self._build_api(data)
        self._log_load_summary()

    # Loading

    def _build_api(self, data):
        raise NotImplementedError

    def _default_category_order(self, categories):
        """Category ids in default label order, from the JSON's category records."""
        raise NotImplementedError

    def _is_crowd(self, annotation):
        raise NotImplementedError

    def _image_path(self, image):
        """Path of an image record's file; FileNotFoundError if it does not exist."""
        raise NotImplementedError

    def _check_references(self, annotations, category_names):
        for a in annotations:
            if a["category_id"] not in category_names:
                raise ValueError(
                    "{}: annotation id {} has category_id {}, which is not in 'categories'; fix "
                    "the annotation or add the category.".format(
                        self.ann_file, a["id"], a["category_id"]
                    )
                )
            if a["image_id"] not in self._images:
                raise ValueError(
                    "{}: annotation id {} has image_id {}, which is not in 'images'.".format(
                        self.ann_file, a["id"], a["image_id"]
                    )
                )
            if len(a["bbox"]) != 4:
                raise ValueError(
                    "{}: annotation id {} has bbox {}; expected [x, y, width, height].".format(
                        self.ann_file, a["id"], a["bbox"]
                    )
                )

    def _label_order(self, category_names, category_records, category_ids):
        if category_ids is None:
            return self._default_category_order(category_records)
        category_ids = list(category_ids)
        unknown = [c for c in category_ids if c not in category_names]
        if unknown:
            raise ValueError(
                "category_ids {} are not categories of {}".format(unknown, self.ann_file)
            )
        duplicated = sorted(c for c, n in Counter(category_ids).items() if n > 1)
        if duplicated:
            raise ValueError("category_ids lists {} more than once".format(duplicated))
        return category_ids

    def _clean_annotations(self, annotations):
        """image id -> its usable annotations (dicts with bbox, category_id and, when the
        dataset has masks, a list of valid polygons), in JSON order."""
        per_image = {image_id: [] for image_id in self._images}
        for a in annotations:
            if self._is_crowd(a) or a["category_id"] not in self.json_category_id_to_contiguous_id:
                continue
            if a["bbox"][2] <= 0 or a["bbox"][3] <= 0:
                self.load_stats["empty_box"] += 1
                continue
            if self._has_masks:
                a = self._with_valid_polygons(a)
                if a is None:
                    continue
            per_image[a["image_id"]].append(a)
        return per_image

    def _with_valid_polygons(self, annotation):
        """The annotation with its invalid polygons removed, or None if none is left."""
        segmentation = annotation.get("segmentation", [])
        if isinstance(segmentation, dict):
            self.load_stats["rle_segmentation"] += 1
            return None
        if not isinstance(segmentation, list) or not all(
            isinstance(p, list) for p in segmentation
        ):
            raise ValueError(
                "{}: annotation id {} has segmentation {!r}; expected a list of polygons "
                "[[x0, y0, x1, y1, ...], ...] or an RLE dict.".format(
                    self.ann_file, annotation["id"], segmentation
                )
            )
        polygons, dropped = _valid_polygons(segmentation)
        self.load_stats["bad_polygon"] += dropped
        if not polygons:
            self.load_stats["no_polygon"] += 1
            return None
        if dropped:
            annotation = dict(annotation, segmentation=polygons)
        return annotation

    def _log_load_summary(self):
        num_annotations = sum(len(self._annotations[i]) for i in self.ids)
        logger.info(
            "%s: %d images, %d annotations of %d categories",
            self.ann_file, len(self.ids), num_annotations, len(self.categories),
        )
        skipped = [
            "{} {}".format(self.load_stats[reason], description)
            for reason, description in SKIP_REASONS.items()
            if self.load_stats[reason]
        ]
        if skipped:
            logger.warning("%s: skipped %s", self.ann_file, "; ".join(skipped))

    # Samples

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, item):
        """(image, target, index): the PIL RGB image (a tensor after ToTensor) and a BoxList
        with fields "labels" (int64, 1..C), "active_label" and, when the JSON has
        segmentations, "masks" (SegmentationMask, polygons), clipped to the image with empty
        boxes removed.

        ``item`` is a dataset index, or an (index, active label) pair from the LST balanced
        replay sampler: every box's int64 "active_label" is that label (the only class the RoI
        head learns from this image; 0 = no restriction, also for a plain index).
        """
        index, active_label = item if isinstance(item, tuple) else (item, 0)
        image_record = self.get_img_info(index)
        image = Image.open(self._image_path(image_record)).convert("RGB")
        annotations = self._annotations[image_record["id"]]

        boxes = torch.as_tensor([a["bbox"] for a in annotations], dtype=torch.float32)
        target = BoxList(boxes.reshape(-1, 4), image.size, mode="xywh").convert("xyxy")
        labels = [self.json_category_id_to_contiguous_id[a["category_id"]] for a in annotations]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target.add_field(
            "active_label", torch.full((len(labels),), active_label, dtype=torch.int64)
        )
        if self._has_masks:
            polygons = [a["segmentation"] for a in annotations]
            target.add_field("masks", SegmentationMask(polygons, image.size, mode="poly"))
        target = target.clip_to_image(remove_empty=True)

        if self._transforms is not None:
            image, target = self._transforms(image, target)
        return image, target, index

    def get_img_info(self, index):
        """The JSON image record of dataset index ``index`` (with "id", "height", "width")."""
        return self._images[self.id_to_img_map[index]]

    def get_category_labels(self, index):
        """Sorted training labels (1..C) of the categories annotated in image ``index``, read
        from the annotations without loading the image (used by the LST samplers)."""
        annotations = self._annotations[self.id_to_img_map[index]]
        to_label = self.json_category_id_to_contiguous_id
        return sorted({to_label[a["category_id"]] for a in annotations})

    def _missing_image_error(self, image, tried):
        return FileNotFoundError(
            "Image file {} of image record id {} ({}) not found; check that the image folder "
            "root={} (the DatasetCatalog img_dir) holds the dataset's images.".format(
                " or ".join(tried), image["id"], self.ann_file, self.root
            )
        )


class COCODataset(JsonDetectionDataset):
    """A COCO-format dataset read through pycocotools (``self.coco``).

    Crowd annotations (iscrowd 1) are dropped; the label space is every category in the
    JSON's order (label = 1 + position), as upstream. Images are ``root/<file_name>``.
    """

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None):
        super().__init__(ann_file, root, remove_images_without_annotations, transforms)

    def _build_api(self, data):
        self.coco = COCO()
        self.coco.dataset = data
        self.coco.createIndex()

    def _default_category_order(self, categories):
        return [c["id"] for c in categories]

    def _is_crowd(self, annotation):
        return annotation.get("iscrowd", 0) != 0

    def _image_path(self, image):
        path = os.path.join(self.root, image["file_name"])
        if not os.path.isfile(path):
            raise self._missing_image_error(image, [path])
        return path
