"""The embedded long-tailed benchmark: a synthetic LVIS-format dataset generated from a seed.

Categories are compositions of shared visual attributes, colour x texture x shape (e.g.
"red_striped_triangle"), so a rare category always looks like some frequent ones, as on LVIS.
Training instance counts are spaced log-uniformly over the categories, from ``max_instances``
down to 1: the number of categories per decade of count is constant, i.e. the count histogram
follows the power law p(n) ~ 1/n. The most frequent categories together show every attribute
value in use. With the defaults (64 categories, 1,500 instances at the head) every
instance-count bin of the LST paper ((0,1], [2,4], [5,9], [10,100), [100,1000), [1000,-)) holds
at least 3 categories. Validation has ``val_fraction`` of the training count of every
category, and never fewer than ``min_val_instances`` (10), so tail AP is measurable.

Generation has two steps:
* ``plan_dataset`` decides everything that goes into the JSON: categories, counts, images
  (size, objects, polygons) and the LVIS federated fields. It rasterises polygons (with
  pycocotools, as LVIS does) only to keep the objects of an image from overlapping.
* ``write_dataset`` renders every planned image (``render_image``) and writes the LVIS files.

Objects are polygons (circles are 32-vertex polygons), rasterised by pycocotools: the pixels
painted in an image are exactly the mask of the polygon written to the JSON, and ``area`` is
that mask's pixel count (the LVIS definition). Masks within an image are disjoint (boxes may
overlap, masks never occlude each other), so every annotated mask is fully visible.

LVIS fields: categories carry ``image_count``, ``instance_count`` and ``frequency`` ("r": 1-10
training images, "c": 11-100, "f": >100) computed from the training split (the same category
records go into val.json, as in LVIS). Every image lists up to ``num_negative_categories``
categories absent from it as ``neg_category_ids``; about ``not_exhaustive_fraction`` of the
images mark one present category as ``not_exhaustive_category_ids``. The annotations of such
a category are nevertheless complete: the flag only exercises the evaluator's handling.

Layout written by ``write_dataset`` (what DatasetCatalog's synthetic_lt_* entries expect):
    OUTPUT/train.json, OUTPUT/val.json, OUTPUT/images/{train,val}/<file_name> (JPEG).
"""
import json
import logging
import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
import pycocotools.mask as mask_utils

logger = logging.getLogger(__name__)

# RGB of each colour attribute (saturated, so they stand out from the muted backgrounds).
COLOURS = {
    "red": (220, 35, 35),
    "green": (40, 170, 50),
    "blue": (35, 70, 220),
    "yellow": (235, 215, 35),
    "cyan": (35, 205, 220),
    "magenta": (215, 45, 200),
    "orange": (245, 135, 25),
    "purple": (125, 45, 175),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")
SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "diamond", "cross")

CIRCLE_VERTICES = 32
SPLITS = ("train", "val")
# Image and annotation ids of the val split start here, so the two splits never share ids.
VAL_ID_OFFSET = 1_000_000
# LVIS frequency groups by training image count: "r" up to 10 images, "c" up to 100, else "f".
FREQUENCY_LIMITS = (("r", 10), ("c", 100))
JPEG_QUALITY = 92


@dataclass(frozen=True)
class CategorySpec:
    """One synthetic category: an id (1-based, as in the JSON) and its three attributes."""

    id: int
    colour: str
    texture: str
    shape: str

    @property
    def name(self):
        return "{}_{}_{}".format(self.colour, self.texture, self.shape)


@dataclass
class ObjectPlan:
    """One annotated object: its category id and polygon [x0, y0, x1, y1, ...] in pixels."""

    category_id: int
    polygon: list


@dataclass
class ImagePlan:
    """One image: size in pixels, its objects (drawn in order), LVIS federated fields and the
    seed of its rendering (background, colour jitter, texture phase)."""

    id: int
    file_name: str
    width: int
    height: int
    render_seed: int
    objects: list = field(default_factory=list)
    neg_category_ids: list = field(default_factory=list)
    not_exhaustive_category_ids: list = field(default_factory=list)


@dataclass
class DatasetPlan:
    """Everything the JSON files hold: categories, and the images of each split."""

    seed: int
    categories: list
    splits: dict


def build_categories(num_categories, rng):
    """Draw ``num_categories`` distinct (colour, texture, shape) combinations; ids 1..K."""
    combos = [(c, t, s) for c in COLOURS for t in TEXTURES for s in SHAPES]
    if not 1 <= num_categories <= len(combos):
        raise ValueError(
            "num_categories={} is out of range: the {} colours x {} textures x {} shapes give "
            "1..{} categories; choose a value in that range.".format(
                num_categories, len(COLOURS), len(TEXTURES), len(SHAPES), len(combos)
            )
        )
    chosen = rng.choice(len(combos), size=num_categories, replace=False)
    return [CategorySpec(i + 1, *combos[k]) for i, k in enumerate(sorted(chosen))]


def frequency_order(categories, rng):
    """Indices of ``categories`` from most to least frequent: a random order, except that each
    next category is one that adds the most attribute values not yet seen higher up, so the
    most frequent categories show every colour, texture and shape in use (the tail's
    attributes can then be learnt from the head).

    Returns a list of indices into ``categories``.
    """
    remaining = [int(i) for i in rng.permutation(len(categories))]
    seen, order = set(), []
    while remaining:
        gains = [len(_attributes(categories[i]) - seen) for i in remaining]
        best = remaining.pop(gains.index(max(gains)))
        seen |= _attributes(categories[best])
        order.append(best)
    return order


def _attributes(category):
    return {("colour", category.colour), ("texture", category.texture), ("shape", category.shape)}


def log_spaced_counts(num_categories, max_instances):
    """Training instance counts in descending order, log-uniform from max_instances to 1.

    Returns a list of ``num_categories`` ints; the first is max_instances, the last 1.
    """
    if num_categories < 2 or max_instances < 1:
        raise ValueError(
            "log_spaced_counts needs num_categories >= 2 and max_instances >= 1; "
            "got {} and {}.".format(num_categories, max_instances)
        )
    exponents = np.linspace(math.log(max_instances), 0.0, num_categories)
    return [max(1, int(round(math.exp(e)))) for e in exponents]


def val_counts(train_counts, val_fraction, min_val_instances):
    """Validation instance count of each category: a fraction of its training count, at least
    ``min_val_instances``."""
    return [max(min_val_instances, int(round(val_fraction * n))) for n in train_counts]


def frequency_of(image_count):
    """LVIS frequency group ("r", "c" or "f") of a category seen in ``image_count`` train images."""
    for group, limit in FREQUENCY_LIMITS:
        if image_count <= limit:
            return group
    return "f"


def shape_polygon(shape, radius, angle, centre):
    """Vertices of a shape of circumradius ``radius`` px rotated by ``angle`` rad around
    ``centre`` (x, y); returns an [N, 2] float array."""
    if shape == "circle":
        unit = _regular(CIRCLE_VERTICES)
    elif shape == "triangle":
        unit = _regular(3)
    elif shape == "square":
        unit = _regular(4)
    elif shape == "pentagon":
        unit = _regular(5)
    elif shape == "hexagon":
        unit = _regular(6)
    elif shape == "star":
        outer = _regular(5)
        inner = _regular(5, phase=math.pi / 5) * 0.45
        unit = np.stack([outer, inner], axis=1).reshape(-1, 2)
    elif shape == "diamond":
        unit = _regular(4) * np.array([0.6, 1.0])
    elif shape == "cross":
        a, b = 1.0, 0.35
        unit = np.array(
            [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b),
             (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        )
    else:
        raise ValueError("Unknown shape {!r}; expected one of {}.".format(shape, SHAPES))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return unit @ rotation.T * radius + np.asarray(centre, dtype=np.float64)


def _regular(n, phase=0.0):
    """Unit-circumradius regular n-gon, first vertex pointing up; [n, 2] array."""
    t = phase - math.pi / 2 + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def polygon_mask(polygon, height, width):
    """pycocotools' rasterisation of one flat polygon: (RLE, [H, W] uint8 mask)."""
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    return rle, mask_utils.decode(rle)


def polygon_bbox(polygon):
    """Tight LVIS box [x, y, w, h] of a flat polygon."""
    xs, ys = polygon[0::2], polygon[1::2]
    x0, y0 = min(xs), min(ys)
    return [x0, y0, round(max(xs) - x0, 2), round(max(ys) - y0, 2)]


def _place_objects(category_ids, width, height, rng, categories, min_radius, max_attempts=12):
    """Place objects of the given categories without mask overlap.

    Returns (placed ObjectPlans, category ids that did not fit).
    """
    occupied = np.zeros((height, width), dtype=bool)
    placed, left_over = [], []
    max_radius = 0.3 * min(width, height)
    for category_id in category_ids:
        shape = categories[category_id - 1].shape
        radius = math.exp(rng.uniform(math.log(min_radius), math.log(max_radius)))
        for _ in range(max_attempts):
            angle = rng.uniform(0, 2 * math.pi)
            centre = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
            vertices = np.round(shape_polygon(shape, radius, angle, centre), 2)
            vertices = np.clip(vertices, 0.0, [width - 0.01, height - 0.01])
            polygon = [float(v) for v in vertices.reshape(-1)]
            mask = polygon_mask(polygon, height, width)[1].astype(bool)
            if mask.any() and not (mask & occupied).any():
                occupied |= mask
                placed.append(ObjectPlan(category_id, polygon))
                break
            radius = max(min_radius, radius * 0.85)
        else:
            left_over.append(category_id)
    return placed, left_over


def plan_split(split, instance_counts, categories, rng, image_size_range, objects_per_image,
               min_radius, num_negative_categories, not_exhaustive_fraction):
    """Plan the images of one split so that category k has exactly instance_counts[k - 1]
    objects; returns a list of ImagePlans."""
    pool = np.repeat(np.arange(1, len(categories) + 1), instance_counts)
    queue = [int(c) for c in rng.permutation(pool)]
    id_offset = VAL_ID_OFFSET if split == "val" else 0
    images = []
    all_ids = np.arange(1, len(categories) + 1)
    while queue:
        wanted = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        batch, queue = queue[:wanted], queue[wanted:]
        low, high = image_size_range
        width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
        objects, left_over = _place_objects(batch, width, height, rng, categories, min_radius)
        queue = left_over + queue
        index = len(images) + 1
        present = sorted({o.category_id for o in objects})
        absent = np.setdiff1d(all_ids, present)
        num_neg = min(num_negative_categories, len(absent))
        neg = sorted(int(c) for c in rng.choice(absent, size=num_neg, replace=False))
        not_exhaustive = []
        if rng.random() < not_exhaustive_fraction:
            not_exhaustive = [int(rng.choice(present))]
        images.append(
            ImagePlan(
                id=id_offset + index,
                file_name="{:06d}.jpg".format(index),
                width=width,
                height=height,
                render_seed=int(rng.integers(2**31)),
                objects=objects,
                neg_category_ids=neg,
                not_exhaustive_category_ids=not_exhaustive,
            )
        )
    return images


def plan_dataset(seed=0, num_categories=64, max_instances=1500, val_fraction=0.05,
                 min_val_instances=10, image_size_range=(128, 192), objects_per_image=(2, 8),
                 min_radius=6.0, num_negative_categories=3, not_exhaustive_fraction=0.05):
    """Decide the whole dataset (everything but the pixels) from ``seed``.

    Arguments:
        num_categories (int): number of categories (attribute combinations), 2..256.
        max_instances (int): training instances of the most frequent category; the rarest has 1.
        val_fraction, min_val_instances: validation count = max(min, round(fraction * train)).
        image_size_range (int, int): inclusive range of image width and height, in pixels.
        objects_per_image (int, int): inclusive range of objects placed per image.
        min_radius (float): smallest object circumradius, in pixels.
        num_negative_categories (int): neg_category_ids per image.
        not_exhaustive_fraction (float): share of images with a not-exhaustive category.
    Returns a DatasetPlan.
    """
    if image_size_range[0] < 4 * min_radius or image_size_range[0] > image_size_range[1]:
        raise ValueError(
            "image_size_range={} must be an increasing pair with a minimum of at least "
            "4 * min_radius = {}.".format(image_size_range, 4 * min_radius)
        )
    if not 1 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(
            "objects_per_image={} must be an increasing pair of positive ints.".format(
                objects_per_image
            )
        )
    rng = np.random.default_rng(seed)
    categories = build_categories(num_categories, rng)
    train_counts = np.empty(num_categories, dtype=np.int64)
    descending_counts = log_spaced_counts(num_categories, max_instances)
    train_counts[frequency_order(categories, rng)] = descending_counts
    counts = {
        "train": train_counts.tolist(),
        "val": val_counts(train_counts.tolist(), val_fraction, min_val_instances),
    }
    splits = {
        split: plan_split(
            split, counts[split], categories, rng, image_size_range, objects_per_image,
            min_radius, num_negative_categories, not_exhaustive_fraction,
        )
        for split in SPLITS
    }
    return DatasetPlan(seed=seed, categories=categories, splits=splits)


def category_statistics(images):
    """Per category id: (number of images containing it, number of instances)."""
    image_count, instance_count = {}, {}
    for image in images:
        for category_id in {o.category_id for o in image.objects}:
            image_count[category_id] = image_count.get(category_id, 0) + 1
        for o in image.objects:
            instance_count[o.category_id] = instance_count.get(o.category_id, 0) + 1
    return image_count, instance_count


def lvis_json(plan, split):
    """The LVIS-format dict of one split (categories statistics always from train)."""
    image_count, instance_count = category_statistics(plan.splits["train"])
    categories = []
    for c in plan.categories:
        n_images = image_count.get(c.id, 0)
        categories.append(
            {
                "id": c.id,
                "name": c.name,
                "synset": "{}.n.01".format(c.name),
                "synonyms": [c.name, "{} {} {}".format(c.colour, c.texture, c.shape)],
                "def": "a {} {} with a {} surface".format(c.colour, c.shape, c.texture),
                "frequency": frequency_of(n_images),
                "image_count": n_images,
                "instance_count": instance_count.get(c.id, 0),
            }
        )
    images, annotations = [], []
    id_offset = VAL_ID_OFFSET if split == "val" else 0
    for image in plan.splits[split]:
        images.append(
            {
                "id": image.id,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "neg_category_ids": image.neg_category_ids,
                "not_exhaustive_category_ids": image.not_exhaustive_category_ids,
            }
        )
        for o in image.objects:
            rle, _ = polygon_mask(o.polygon, image.height, image.width)
            annotations.append(
                {
                    "id": id_offset + len(annotations) + 1,
                    "image_id": image.id,
                    "category_id": o.category_id,
                    "segmentation": [o.polygon],
                    "bbox": polygon_bbox(o.polygon),
                    "area": float(mask_utils.area(rle)),
                }
            )
    return {
        "info": {
            "description": "Synthetic long-tailed benchmark (LVIS format), seed {}".format(
                plan.seed
            ),
            "version": "1.0",
        },
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def _background(rng, height, width):
    """A muted background: a gradient, smooth noise or faint stripes, plus pixel noise;
    [H, W, 3] float32 RGB in 0..255."""
    kind = rng.integers(3)
    tint = lambda: rng.uniform(70, 190) + rng.uniform(-25, 25, size=3)  # noqa: E731
    if kind == 0:
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:height, 0:width]
        t = (x * math.cos(angle) + y * math.sin(angle)).astype(np.float32)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        image = (1 - t)[..., None] * tint() + t[..., None] * tint()
    elif kind == 1:
        grid = (int(rng.integers(3, 9)), int(rng.integers(3, 9)))
        coarse = rng.uniform(60, 200, size=grid + (1,)) + rng.uniform(-30, 30, size=grid + (3,))
        image = cv2.resize(
            coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
        )
    else:
        period = rng.uniform(6, 20)
        angle = rng.uniform(0, math.pi)
        y, x = np.mgrid[0:height, 0:width]
        wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
        image = tint() + (rng.uniform(5, 20) * wave)[..., None]
    image = image + rng.normal(0, rng.uniform(2, 10), size=(height, width, 3))
    return image.astype(np.float32)


def _texture_mask(texture, rng, x, y):
    """Where the darker second colour goes, on pixel coordinates x, y (arrays); bool array."""
    if texture == "striped":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, 7)
        return ((x * math.cos(angle) + y * math.sin(angle)) / period) % 1.0 < 0.5
    if texture == "dotted":
        spacing = rng.uniform(4.5, 7)
        dx = (x + rng.uniform(0, spacing)) % spacing - spacing / 2
        dy = (y + rng.uniform(0, spacing)) % spacing - spacing / 2
        return dx * dx + dy * dy <= (0.3 * spacing) ** 2
    if texture == "checkered":
        size = rng.uniform(3, 6)
        return ((np.floor(x / size) + np.floor(y / size)) % 2) == 1
    return np.zeros(x.shape, dtype=bool)


def render_image(image_plan, categories):
    """Render one planned image: [H, W, 3] uint8 RGB. Each object paints exactly the pixels of
    its polygon's pycocotools mask."""
    rng = np.random.default_rng(image_plan.render_seed)
    height, width = image_plan.height, image_plan.width
    image = _background(rng, height, width)
    for o in image_plan.objects:
        category = categories[o.category_id - 1]
        mask = polygon_mask(o.polygon, height, width)[1].astype(bool)
        ys, xs = np.nonzero(mask)
        base = np.asarray(COLOURS[category.colour], dtype=np.float32) * rng.uniform(0.85, 1.1)
        dark = _texture_mask(category.texture, rng, xs.astype(np.float32), ys.astype(np.float32))
        colours = np.where(dark[:, None], base * 0.35, base)
        image[ys, xs] = colours + rng.normal(0, 4, size=colours.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(plan, output_dir):
    """Render and write a planned dataset: output_dir/{train,val}.json and
    output_dir/images/{train,val}/*.jpg. Returns {split: path of its json}."""
    paths = {}
    for split in SPLITS:
        image_dir = os.path.join(output_dir, "images", split)
        os.makedirs(image_dir, exist_ok=True)
        for image_plan in plan.splits[split]:
            rgb = render_image(image_plan, plan.categories)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError("OpenCV could not encode image {}".format(image_plan.file_name))
            with open(os.path.join(image_dir, image_plan.file_name), "wb") as f:
                f.write(encoded.tobytes())
        paths[split] = os.path.join(output_dir, "{}.json".format(split))
        with open(paths[split], "w") as f:
            json.dump(lvis_json(plan, split), f)
        logger.info("Wrote %d %s images and %s", len(plan.splits[split]), split, paths[split])
    return paths
