"""LVISDataset: LVIS v0.5 / v1 annotations (and the embedded synthetic benchmark, which uses
the LVIS format), read through the ``lvis`` package's LVIS class (``self.lvis``).

Image files, as detectron2 locates them:
* a record with ``file_name`` (v0.5): ``root/<file_name>``; COCO-2014-style names
  "COCO_train2014_000000000009.jpg" are looked up under their 2017 name "000000000009.jpg"
  first, since the LVIS v0.5 catalog entries point at COCO's train2017/val2017 folders;
* a record with only ``coco_url`` (v1): ``root/<split>/<file>`` from the URL's last two parts,
  e.g. ".../train2017/000000391895.jpg" -> root/train2017/000000391895.jpg.

LVIS has no crowd annotations. The federated-evaluation fields (neg_category_ids,
not_exhaustive_category_ids, category frequency) are left to the evaluator.
"""
import os

from lvis import LVIS

from .annotation_checks import LVIS_IMAGE_PATH_KEYS
from .coco import JsonDetectionDataset


class LVISFromDict(LVIS):
    """lvis-api's LVIS index built from an annotation dict that is already loaded and checked."""

    def _load_json(self, dataset):
        return dataset


class LVISDataset(JsonDetectionDataset):
    """An LVIS-format dataset.

    Arguments:
        ann_file, root, remove_images_without_annotations, transforms: as COCODataset.
        category_ids (list[int] or None): the categories to train on, in label order: label =
            1 + position in the list (LST's instance-count order). Annotations of other
            categories are ignored and, in training, only images with a valid annotation of
            these categories are kept. None: every category, in ascending id order.
    """

    FORMAT_NAME = "LVIS"
    IMAGE_PATH_KEYS = LVIS_IMAGE_PATH_KEYS
    HONOURS_ISCROWD = False  # LVIS has no crowd annotations: an "iscrowd" field is ignored

    def __init__(
        self, ann_file, root, remove_images_without_annotations, transforms=None, category_ids=None
    ):
        super().__init__(
            ann_file, root, remove_images_without_annotations, transforms, category_ids
        )

    def _build_api(self, data):
        self.lvis = LVISFromDict(data)

    def _default_category_order(self, categories):
        return sorted(c["id"] for c in categories)

    def _image_path(self, image):
        if "file_name" in image:
            file_name = image["file_name"]
            tried = [os.path.join(self.root, file_name)]
            if file_name.startswith("COCO_"):
                tried.insert(0, os.path.join(self.root, file_name.split("_")[-1]))
        else:
            url_parts = image["coco_url"].rstrip("/").split("/")
            if len(url_parts) < 2:
                raise ValueError(
                    "{}: image record id {} has coco_url {!r}; expected "
                    "'.../<split>/<file>'".format(self.ann_file, image["id"], image["coco_url"])
                )
            tried = [os.path.join(self.root, url_parts[-2], url_parts[-1])]
        for path in tried:
            if os.path.isfile(path):
                return path
        raise self._missing_image_error(image, tried)
