"""One validation pass over a COCO/LVIS-format annotation file, shared by the dataset loaders,
the LST division (maskrcnn_benchmark.lst) and the LVIS evaluator.

``check_annotations`` looks at every image, category and annotation record once: ids of the
right type and unique, image sizes plausible, annotations pointing at known images and
categories, boxes of finite numbers with a positive size and some area inside the image,
polygons of at least 3 points of finite coordinates near the image. Each problem is counted by
kind (``PROBLEMS``) and its first records are named; then the policy of the run decides per
kind (``TRAINING`` or ``EVALUATION``):

* "skip": the annotation (or polygon) is left out, counted and reported in one warning line;
* "warn": it is kept (in the ground truth; polygons and annotations that cannot make a mask
  are no training target), counted and reported;
* "error": the whole file is refused with one line naming the file, the first records and the
  fix (evaluation ground truth, and whatever would crash or silently corrupt a run: NaN
  polygons segfault pycocotools);
* "ok": not a problem for this use (not counted).

The annotations that survive the pass (``CheckedAnnotations.used``) are exactly those training
uses: the training instance counts of the division, the replay quotas and the evaluation bins
all come from them (``training_statistics``), never from the categories' ``instance_count``
fields, which only get compared (a warning names the categories whose field is stale).

Boxes are [x, y, w, h] in pixels; like BoxList (inclusive corners x .. x + w - 1, clipped to the
image, empty boxes removed), a box with at most one pixel inside the image is no box.
"""
import json
import logging
import math
import numbers
import os
from collections import Counter, OrderedDict, namedtuple

import numpy as np

logger = logging.getLogger(__name__)

TRAINING = "training"
EVALUATION = "evaluation"

# The largest side a JPEG can have; a record claiming more is a broken record.
MAX_IMAGE_SIDE = 65535
# How many records of one kind of problem the messages name.
NUM_EXAMPLES = 3

Problem = namedtuple("Problem", ["description", "fix", "training", "evaluation"])

PROBLEMS = OrderedDict([
    ("image_id_type", Problem(
        "image records whose id is not an integer", "write image ids as JSON integers",
        "error", "error")),
    ("duplicate_image_id", Problem(
        "image records whose id repeats an earlier record's",
        "give every image record its own id", "error", "error")),
    ("bad_image_size", Problem(
        "image records whose width/height is not an integer in 1..{}".format(MAX_IMAGE_SIDE),
        "write the image's true width and height (in pixels) into its record", "error", "error")),
    ("category_id_type", Problem(
        "records whose category id is not an integer (e.g. a string)",
        "write category ids as JSON integers, e.g. 3, not \"3\"", "error", "error")),
    ("duplicate_category_id", Problem(
        "category records whose id repeats an earlier record's",
        "give every category its own id", "error", "error")),
    ("annotation_id_type", Problem(
        "annotations whose id is not an integer", "write annotation ids as JSON integers",
        "error", "error")),
    ("duplicate_annotation_id", Problem(
        "annotations whose id repeats an earlier annotation's (the later ones)",
        "give every annotation its own id", "skip", "error")),
    ("unknown_image", Problem(
        "annotations whose image_id is not in 'images'",
        "fix the annotation's image_id or add the image record", "error", "error")),
    ("unknown_category", Problem(
        "annotations whose category_id is not in 'categories'",
        "fix the annotation or add the category", "error", "error")),
    ("bbox_malformed", Problem(
        "annotations whose bbox is not [x, y, width, height]",
        "write bbox as a list of 4 numbers [x, y, width, height]", "error", "error")),
    ("bbox_not_finite", Problem(
        "annotations with a NaN or infinite bbox coordinate",
        "fix or remove these annotations", "skip", "error")),
    ("empty_box", Problem(
        "annotations with a zero or negative box width/height",
        "fix or remove these annotations", "skip", "warn")),
    ("box_outside_image", Problem(
        "annotations whose box lies entirely outside its image",
        "fix the bbox (or the image record's size) or remove these annotations", "skip", "error")),
    ("thin_box", Problem(
        "annotations at most 1 pixel wide or high inside the image (no box once clipped)",
        "none needed; they cannot be learned from", "skip", "ok")),
    ("box_clipped", Problem(
        "annotations whose box reaches more than 1 pixel outside its image (clipped to it)",
        "check the bbox or the image record's size", "warn", "warn")),
    ("segmentation_malformed", Problem(
        "annotations whose segmentation is neither a list of polygons nor an RLE dict",
        "write segmentation as [[x0, y0, x1, y1, ...], ...] or an RLE {'size', 'counts'}",
        "error", "error")),
    ("rle_segmentation", Problem(
        "non-crowd annotations with an RLE segmentation (only polygons are read)",
        "convert them to polygons to train on them", "skip", "skip")),
    ("polygon_not_finite", Problem(
        "polygons with a coordinate that is not a finite number within one image size of the "
        "image (NaN, inf, a string, or absurdly far away)",
        "fix or remove these polygons", "skip", "error")),
    ("bad_polygon", Problem(
        "polygons with fewer than 3 points or an odd number of coordinates",
        "fix or remove these polygons", "skip", "warn")),
    ("no_polygon", Problem(
        "annotations left with no valid polygon",
        "fix their segmentation or remove them", "skip", "warn")),
])

_POLICIES = (TRAINING, EVALUATION)


class AnnotationError(ValueError):
    """An annotation file the run cannot use; the one-line message names file, records, fix."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _describe_annotation(a, key):
    return "annotation id {!r} has {} {!r}".format(a.get("id"), key, a.get(key))


class CheckedAnnotations:
    """The result of ``check_annotations``.

    Attributes:
        source (str): the file, for messages.
        policy (str): TRAINING or EVALUATION.
        images (dict): image id -> image record (of every image record).
        categories (OrderedDict): category id -> category record, in the file's order.
        used (dict): image id -> the annotations training uses, in file order (crowd and
            skipped ones left out; a copy without its invalid polygons where some were dropped).
        unusable_images (set): ids of image records with an invalid size (an error).
        problems (Counter): kind (key of PROBLEMS) -> number of records with it.
        examples (dict): kind -> the first NUM_EXAMPLES descriptions of such records.
    """

    def __init__(self, source, policy):
        self.source = source
        self.policy = policy
        self.images = {}
        self.categories = OrderedDict()
        self.used = {}
        self.unusable_images = set()
        self.problems = Counter()
        self.examples = {}

    def note(self, kind, description, count=1):
        """Count ``count`` records with problem ``kind``; returns its action in this policy."""
        action = getattr(PROBLEMS[kind], self.policy)
        if action != "ok":
            self.problems[kind] += count
            examples = self.examples.setdefault(kind, [])
            if len(examples) < NUM_EXAMPLES:
                examples.append(description)
        return action

    def _reported(self, actions):
        return [kind for kind in PROBLEMS
                if self.problems[kind] and getattr(PROBLEMS[kind], self.policy) in actions]

    def _phrase(self, kind):
        return "{} {} ({})".format(
            self.problems[kind], PROBLEMS[kind].description, "; ".join(self.examples[kind]))

    def raise_errors(self):
        """AnnotationError listing every problem of an "error" kind, if any."""
        kinds = self._reported(("error",))
        if kinds:
            raise AnnotationError("{}: {}".format(self.source, "; ".join(
                "{}: {}".format(self._phrase(kind), PROBLEMS[kind].fix) for kind in kinds)))

    def report(self):
        """Phrases "<n> <description> (<first records>)" of the skipped and kept problems."""
        skipped = [self._phrase(kind) for kind in self._reported(("skip",))]
        kept = [self._phrase(kind) for kind in self._reported(("warn",))]
        phrases = []
        if skipped:
            phrases.append("skipped " + "; ".join(skipped))
        if kept:
            phrases.append("kept, but check: " + "; ".join(kept))
        return phrases

    def instance_counts(self):
        """category id -> number of used annotations (0 for a category without any)."""
        counts = Counter(a["category_id"] for annotations in self.used.values() for a in annotations)
        return OrderedDict((c, counts.get(c, 0)) for c in self.categories)

    def image_counts(self):
        """category id -> number of images with at least one used annotation of it."""
        counts = Counter(c for annotations in self.used.values()
                         for c in {a["category_id"] for a in annotations})
        return OrderedDict((c, counts.get(c, 0)) for c in self.categories)


def _check_images(images, checked):
    for position, image in enumerate(images):
        image_id = image["id"]
        if not _is_int(image_id):
            checked.note("image_id_type", "image record {} has id {!r}".format(position, image_id))
            continue
        if image_id in checked.images:
            checked.note("duplicate_image_id", "image id {}".format(image_id))
            continue
        width, height = image["width"], image["height"]
        checked.images[image_id] = image
        if not all(_is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in (width, height)):
            checked.note("bad_image_size", "image id {} has width {!r}, height {!r}".format(
                image_id, width, height))
            checked.unusable_images.add(image_id)
            continue
        checked.used[image_id] = []


def _check_categories(categories, checked):
    for position, category in enumerate(categories):
        category_id = category["id"]
        if not _is_int(category_id):
            checked.note("category_id_type", "category record {} has id {!r}".format(
                position, category_id))
        elif category_id in checked.categories:
            checked.note("duplicate_category_id", "category id {}".format(category_id))
        else:
            checked.categories[category_id] = category


def _box_action(a, image, checked):
    """The action for the annotation's box: None when fine, else the noted problem's action."""
    x, y, w, h = a["bbox"]
    if w <= 0 or h <= 0:
        return checked.note("empty_box", _describe_annotation(a, "bbox"))
    width, height = image["width"], image["height"]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return checked.note("box_outside_image", "annotation id {!r} has bbox {!r} in image {} "
                            "of {}x{}".format(a.get("id"), a["bbox"], image["id"], width, height))
    # BoxList's inclusive corners, clipped to the image (clip_to_image(remove_empty=True)).
    x1, y1 = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
    x2, y2 = min(max(x + w - 1, 0), width - 1), min(max(y + h - 1, 0), height - 1)
    if x2 <= x1 or y2 <= y1:
        action = checked.note("thin_box", _describe_annotation(a, "bbox"))
        if action != "ok":
            return action
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        return checked.note("box_clipped", "annotation id {!r} has bbox {!r} in image {} of "
                            "{}x{}".format(a.get("id"), a["bbox"], image["id"], width, height))
    return None


def _polygon_problem(polygon, width, height):
    """The problem kind of one polygon [x0, y0, x1, y1, ...], or None if it is valid."""
    if not isinstance(polygon, list):
        return "segmentation_malformed"
    coordinates = np.asarray(polygon) if polygon else np.zeros(0)
    if coordinates.ndim != 1 or coordinates.dtype.kind not in "iuf":
        return "polygon_not_finite"
    if not np.isfinite(coordinates).all():
        return "polygon_not_finite"
    xs, ys = coordinates[0::2], coordinates[1::2]
    if len(xs) and (xs.min() < -width or xs.max() > 2 * width):
        return "polygon_not_finite"
    if len(ys) and (ys.min() < -height or ys.max() > 2 * height):
        return "polygon_not_finite"
    if len(coordinates) < 6 or len(coordinates) % 2:
        return "bad_polygon"
    return None


def _segmentation_action(a, image, checked, polygons_only):
    """(action, annotation to use): the annotation, or a copy without its invalid polygons."""
    segmentation = a.get("segmentation", [])
    if isinstance(segmentation, dict):
        if not (isinstance(segmentation.get("size"), list) and "counts" in segmentation):
            return checked.note("segmentation_malformed", "annotation id {!r}".format(a.get("id"))), a
        if polygons_only:
            return checked.note("rle_segmentation", "annotation id {!r}".format(a.get("id"))), a
        return None, a
    if not isinstance(segmentation, list):
        return checked.note("segmentation_malformed", _describe_annotation(a, "segmentation")), a
    kept, worst = [], None
    for polygon in segmentation:
        kind = _polygon_problem(polygon, image["width"], image["height"])
        if kind == "segmentation_malformed":
            return checked.note(kind, _describe_annotation(a, "segmentation")), a
        if kind is None:
            kept.append(polygon)
            continue
        action = checked.note(kind, "a polygon of annotation id {!r}: {!r}".format(
            a.get("id"), polygon if len(polygon) <= 8 else polygon[:8] + ["..."]))
        if action == "error":
            worst = "error"
    if worst == "error":
        return "error", a
    if not kept:
        # Kept ("warn") in the ground truth, but without a polygon it is no training target.
        checked.note("no_polygon", "annotation id {!r}".format(a.get("id")))
        return "skip", a
    return None, (a if len(kept) == len(segmentation) else dict(a, segmentation=kept))


def _check_annotation(a, checked, seen_ids, has_masks, honour_iscrowd, polygons_only):
    """The annotation to use, or None (skipped, errored or crowd)."""
    if not _is_int(a["id"]):
        checked.note("annotation_id_type", _describe_annotation(a, "id"))
        return None
    if a["id"] in seen_ids:
        checked.note("duplicate_annotation_id", "annotation id {}".format(a["id"]))
        return None
    seen_ids.add(a["id"])
    if _is_int(a["image_id"]) and a["image_id"] in checked.unusable_images:
        return None
    image = checked.images.get(a["image_id"]) if _is_int(a["image_id"]) else None
    if image is None:
        checked.note("unknown_image", _describe_annotation(a, "image_id"))
        return None
    if not _is_int(a["category_id"]):
        checked.note("category_id_type", _describe_annotation(a, "category_id"))
        return None
    if a["category_id"] not in checked.categories:
        checked.note("unknown_category", _describe_annotation(a, "category_id"))
        return None
    box = a["bbox"]
    if not isinstance(box, list) or len(box) != 4 or any(
            isinstance(v, bool) or not isinstance(v, numbers.Real) for v in box):
        checked.note("bbox_malformed", _describe_annotation(a, "bbox"))
        return None
    if not all(math.isfinite(v) for v in box):
        checked.note("bbox_not_finite", _describe_annotation(a, "bbox"))
        return None
    if honour_iscrowd and a.get("iscrowd", 0):
        return None
    if _box_action(a, image, checked) in ("skip", "error"):
        return None
    if has_masks:
        action, a = _segmentation_action(a, image, checked, polygons_only)
        if action in ("skip", "error"):
            return None
    return a


def check_annotations(data, source, policy, honour_iscrowd=True, polygons_only=True):
    """Check every record of an annotation dict and apply ``policy`` (TRAINING or EVALUATION).

    Arguments:
        data (dict): with "images", "annotations" and "categories" lists whose records have
            the keys load_annotation_json requires.
        source (str): the file, for messages.
        honour_iscrowd (bool): annotations with a non-zero "iscrowd" are checked but not used
            (COCO); False: the field is ignored (LVIS has no crowd annotations).
        polygons_only (bool): the caller reads polygons only (the dataset loaders): non-crowd
            RLE segmentations are a problem ("rle_segmentation"). False: RLEs are fine.

    Returns CheckedAnnotations. Raises AnnotationError for a problem of an "error" kind.
    """
    if policy not in _POLICIES:
        raise ValueError("policy {!r} unknown; use one of {}".format(policy, _POLICIES))
    checked = CheckedAnnotations(source, policy)
    _check_images(data["images"], checked)
    _check_categories(data["categories"], checked)
    has_masks = any("segmentation" in a for a in data["annotations"])
    seen_ids = set()
    for a in data["annotations"]:
        used = _check_annotation(a, checked, seen_ids, has_masks, honour_iscrowd, polygons_only)
        if used is not None:
            checked.used[used["image_id"]].append(used)
    checked.raise_errors()
    return checked


# ----------------------------------------------------------------------------- loading
# Keys every record of each section must have (image path keys are checked per format).
REQUIRED_KEYS = {
    "images": ("id", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
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
    check_structure(data, ann_file, format_name, image_path_keys)
    return data


def check_structure(data, source, format_name, image_path_keys):
    """ValueError naming ``source`` and the missing key unless ``data`` has the sections and the
    record keys of REQUIRED_KEYS, and every image record one of ``image_path_keys``."""
    def not_the_format(problem):
        return ValueError(
            "{} is not a {} annotation file: {}".format(source, format_name, problem)
        )

    if not isinstance(data, dict):
        raise not_the_format(
            "expected a JSON object with keys {}, got a {}".format(
                sorted(REQUIRED_KEYS), type(data).__name__
            )
        )
    for section, record_keys in REQUIRED_KEYS.items():
        if not isinstance(data.get(section), list):
            raise not_the_format("missing key '{}' (a list of records)".format(section))
        for position, record in enumerate(data[section]):
            if not isinstance(record, dict):
                raise not_the_format("{} record {} is a {}, not an object".format(
                    section, position, type(record).__name__))
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


# ----------------------------------------------------------------------------- training counts
LVIS_IMAGE_PATH_KEYS = ("file_name", "coco_url")


def training_statistics(train_annotations, source=None):
    """(instance_counts, image_counts) of an LVIS-format training set, from one TRAINING pass.

    Arguments:
        train_annotations (dict or str): the training json's dict, or its path.
        source (str, optional): the file, for messages (default: the path, or "training
            annotations").

    Returns two OrderedDicts category id -> number of annotations training uses / number of
    images with at least one of them (0 for a category without any). Logs one warning for the
    skipped annotations, one naming the categories whose ``instance_count`` field differs from
    the count (the count is what is returned), and one for categories without any.
    """
    if isinstance(train_annotations, str):
        source = source or train_annotations
        train_annotations = load_annotation_json(train_annotations, "LVIS", LVIS_IMAGE_PATH_KEYS)
    source = source or "training annotations"
    check_structure(train_annotations, source, "LVIS", LVIS_IMAGE_PATH_KEYS)
    checked = check_annotations(train_annotations, source, TRAINING, honour_iscrowd=False)
    for phrase in checked.report():
        logger.warning("%s: %s", source, phrase)
    instance_counts = checked.instance_counts()
    stale = [(c, record["instance_count"], instance_counts[c])
             for c, record in checked.categories.items()
             if "instance_count" in record and record["instance_count"] != instance_counts[c]]
    if stale:
        logger.warning(
            "%s: %d categories' instance_count fields differ from the annotations training uses "
            "(%s); the counted values are used", source, len(stale), ", ".join(
                "category {}: field {}, counted {}".format(*entry)
                for entry in stale[:NUM_EXAMPLES]))
    empty = [c for c, n in instance_counts.items() if n == 0]
    if empty:
        logger.warning(
            "%s: %d categories have no training annotation (ids %s): they cannot be learned and "
            "no image of them can be replayed", source, len(empty), empty[:10])
    return instance_counts, checked.image_counts()
