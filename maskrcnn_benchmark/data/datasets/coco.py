"""COCO-format instance datasets.

``JsonDetectionDataset`` holds what COCODataset and LVISDataset share: validating the annotation
JSON once at load time (annotation_checks.py: the training policy skips and counts bad
annotations, the test policy refuses them, since they are the evaluation's ground truth), the
contiguous label space, and building the (image, BoxList target, index) samples. ``COCODataset`` adds the
pycocotools index, crowd filtering and COCO's file_name image paths.

Boxes follow maskrcnn-benchmark's conventions: JSON boxes are [x, y, w, h] in pixels and become
inclusive xyxy corners [x, y, x + w - 1, y + h - 1] (BoxList's "xywh" -> "xyxy" conversion).
"""
import logging
import os
from collections import Counter

import torch
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

from .annotation_checks import EVALUATION, TRAINING, check_annotations, load_annotation_json

logger = logging.getLogger(__name__)

class JsonDetectionDataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO-style JSON file.

    Subclasses build the annotation API (``_build_api``), choose the default label order
    (``_default_category_order``), locate image files (``_image_path``) and say whether
    "iscrowd" annotations are left out (``HONOURS_ISCROWD``).

    Arguments:
        ann_file (str): annotation JSON.
        root (str): image folder.
        remove_images_without_annotations (bool): training: keep only images with at least one
            valid annotation, and skip (count, log) the annotations the checks reject. False
            (test): the annotations are the evaluation's ground truth, and a bad one is an
            error (see annotation_checks.py for the policies).
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
        load_stats (Counter): how many records had each problem (keys of
            annotation_checks.PROBLEMS), and "image_without_annotations": training images
            dropped.
    """

    FORMAT_NAME = "COCO"
    IMAGE_PATH_KEYS = ("file_name",)
    HONOURS_ISCROWD = True

    def __init__(
        self, ann_file, root, remove_images_without_annotations, transforms=None, category_ids=None
    ):
        self.ann_file = ann_file
        self.root = root
        self._transforms = transforms

        data = load_annotation_json(ann_file, self.FORMAT_NAME, self.IMAGE_PATH_KEYS)
        policy = TRAINING if remove_images_without_annotations else EVALUATION
        checked = check_annotations(data, ann_file, policy, honour_iscrowd=self.HONOURS_ISCROWD)
        self._images = checked.images
        category_names = {c: record["name"] for c, record in checked.categories.items()}

        label_order = self._label_order(category_names, data["categories"], category_ids)
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(label_order)}
        self.contiguous_category_id_to_json_id = {
            label: c for c, label in self.json_category_id_to_contiguous_id.items()
        }
        self.categories = {c: category_names[c] for c in label_order}

        self._has_masks = any("segmentation" in a for a in data["annotations"])
        self.load_stats = Counter(checked.problems)
        self._annotations = {
            image_id: [a for a in annotations
                       if a["category_id"] in self.json_category_id_to_contiguous_id]
            for image_id, annotations in checked.used.items()
        }

        self.ids = sorted(self._images)
        if remove_images_without_annotations:
            # Judged on the checked annotations: unlike upstream, an image with only crowd
            # annotations is dropped (it would reach the model with no ground truth).
            self.ids = [i for i in self.ids if self._annotations[i]]
            self.load_stats["image_without_annotations"] = len(self._images) - len(self.ids)
            if not self.ids:
                raise ValueError(
                    "{}: no training image has a usable annotation of the {} categories trained "
                    "on{}; fix the annotations (see the skipped ones above) or choose other "
                    "categories.".format(ann_file, len(label_order), "".join(
                        "; " + phrase for phrase in checked.report())))
        self.id_to_img_map = dict(enumerate(self.ids))

        self._build_api(data)
        self._log_load_summary(checked)

    # Loading

    def _build_api(self, data):
        raise NotImplementedError

    def _default_category_order(self, categories):
        """Category ids in default label order, from the JSON's category records."""
        raise NotImplementedError

    def _image_path(self, image):
        """Path of an image record's file; FileNotFoundError if it does not exist."""
        raise NotImplementedError

    def _label_order(self, category_names, category_records, category_ids):
        if category_ids is None:
            return self._default_category_order(category_records)
        category_ids = list(category_ids)
        unknown = [c for c in category_ids if c not in category_names]
        if unknown:
            raise ValueError(
                "category_ids {} are not categories of {}; if they come from an LST phases "
                "file, it was made from another training json: regenerate it with "
                "tools/lst_prepare.py.".format(unknown, self.ann_file)
            )
        duplicated = sorted(c for c, n in Counter(category_ids).items() if n > 1)
        if duplicated:
            raise ValueError("category_ids lists {} more than once".format(duplicated))
        return category_ids

    def _log_load_summary(self, checked):
        num_annotations = sum(len(self._annotations[i]) for i in self.ids)
        logger.info(
            "%s: %d images, %d annotations of %d categories",
            self.ann_file, len(self.ids), num_annotations, len(self.categories),
        )
        phrases = checked.report()
        dropped = self.load_stats["image_without_annotations"]
        if dropped:
            phrases.append("dropped {} training images without a valid annotation".format(dropped))
        if phrases:
            logger.warning("%s: %s", self.ann_file, "; ".join(phrases))

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
        image = self._read_image(image_record)
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

    def _read_image(self, image_record):
        """The RGB PIL image of a record; OSError naming the file and the record when it cannot
        be decoded, ValueError when its size differs from the record's width and height (read
        from the file's header, before the pixels are decoded)."""
        path = self._image_path(image_record)
        try:
            image = Image.open(path)
            recorded = (image_record["width"], image_record["height"])
            if image.size != recorded:
                raise ValueError(
                    "Image file {} of image record id {} ({}) is {}x{} pixels but the record says "
                    "width {}, height {}; correct the record or replace the file.".format(
                        path, image_record["id"], self.ann_file, *image.size, *recorded))
            return image.convert("RGB")
        except OSError as error:
            raise OSError(
                "Image file {} of image record id {} ({}) cannot be decoded ({}); replace the "
                "file, or remove the image record and its annotations.".format(
                    path, image_record["id"], self.ann_file, error)) from error

    def get_img_info(self, index):
        """The JSON image record of dataset index ``index`` (with "id", "height", "width")."""
        return self._images[self.id_to_img_map[index]]

    def get_category_labels(self, index):
        """Sorted training labels (1..C) of the categories annotated in image ``index``, read
        from the annotations without loading the image (used by the LST samplers)."""
        return sorted(self.get_category_instance_counts(index))

    def get_category_instance_counts(self, index):
        """{training label: number of its annotations} of image ``index``, read from the
        annotations without loading the image (LST's replay balance)."""
        annotations = self._annotations[self.id_to_img_map[index]]
        to_label = self.json_category_id_to_contiguous_id
        return dict(Counter(to_label[a["category_id"]] for a in annotations))

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

    def _image_path(self, image):
        path = os.path.join(self.root, image["file_name"])
        if not os.path.isfile(path):
            raise self._missing_image_error(image, [path])
        return path
