"""Small COCO- and LVIS-format datasets with real image files, written into a folder, for tests.

Every writer returns a ``DatasetFixture(ann_file, root, data)``; ``data`` is the JSON dict that
was written, so a test can derive its expectations from it (or change a copy and write it with
``write_json`` to make a broken variant). Objects are drawn as filled rectangles in a colour
unique to their annotation (``annotation_colour``) on a black image; an annotation's polygon is
its rectangle, so box, mask and pixels of an object coincide.
"""
import json
import os
import random
from collections import namedtuple

from PIL import Image, ImageDraw

DatasetFixture = namedtuple("DatasetFixture", ["ann_file", "root", "data"])


# Saturated colours, none a multiple of another, so an edge pixel blended with the black
# background never looks like another object's colour.
PALETTE = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128),
)


def annotation_colour(annotation_id):
    """The RGB colour of an annotation's rectangle; consecutive ids get different colours."""
    return PALETTE[annotation_id % len(PALETTE)]


def rectangle_polygon(bbox):
    """The polygon [x0, y0, ...] of the rectangle covered by bbox = [x, y, w, h]."""
    x, y, w, h = bbox
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def write_image(path, width, height, objects):
    """Write a black width x height RGB image with each (bbox [x, y, w, h], colour) of
    ``objects`` filled (pixels x..x+w-1, y..y+h-1). The format follows the file extension."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for (x, y, w, h), colour in objects:
        if w >= 1 and h >= 1:
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
    if path.endswith(".jpg"):
        image.save(path, quality=95)
    else:
        image.save(path)


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _draw_images(data, image_path):
    """Draw every image of ``data`` at image_path(record), with its annotations' rectangles."""
    objects = {image["id"]: [] for image in data["images"]}
    for a in data["annotations"]:
        objects[a["image_id"]].append((a["bbox"], annotation_colour(a["id"])))
    for image in data["images"]:
        write_image(image_path(image), image["width"], image["height"], objects[image["id"]])


def _annotation(ann_id, image_id, category_id, bbox, iscrowd=0, segmentation=None):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": iscrowd,
        "segmentation": [rectangle_polygon(bbox)] if segmentation is None else segmentation,
    }


def write_coco_fixture(directory):
    """A COCO-format dataset with every case the loader must handle.

    Categories, in JSON order: 3, 1, 7 (so contiguous labels 1, 2, 3 follow the JSON, not the
    ids). Images (PNG, ids listed out of order):
      2 (64x48): two valid annotations and a crowd one (RLE);
      4 (40x60, portrait): one valid annotation;
      5 (50x50): a crowd annotation only;
      7 (60x40): no annotation;
      9 (48x64, portrait): a zero-width box, an annotation with two malformed polygons besides
         its valid one, an annotation whose only polygon is malformed, a valid annotation;
      11 (64x48): one annotation one pixel wide (not a valid training annotation).
    Load-time skips: 1 empty box, 3 malformed polygons, 1 annotation left without polygon;
    in training images 5, 7 and 11 are dropped.
    """
    root = os.path.join(directory, "coco_images")
    crowd_rle = {"counts": [100, 20, 64 * 48 - 120], "size": [48, 64]}
    annotations = [
        _annotation(1, 2, 3, [4, 6, 20, 10]),
        _annotation(2, 2, 1, [30, 20, 16, 20]),
        _annotation(3, 2, 7, [50, 2, 10, 10], iscrowd=1, segmentation=crowd_rle),
        _annotation(4, 4, 7, [5, 10, 20, 30]),
        _annotation(5, 5, 1, [10, 10, 20, 20], iscrowd=1, segmentation=crowd_rle),
        _annotation(6, 9, 1, [3, 3, 0, 10]),
        _annotation(
            7, 9, 3, [10, 10, 12, 14],
            segmentation=[rectangle_polygon([10, 10, 12, 14]), [1, 2, 3, 4, 5], [1, 2, 3, 4]],
        ),
        _annotation(8, 9, 7, [26, 30, 10, 10], segmentation=[[26, 30, 36, 30]]),
        _annotation(9, 9, 1, [30, 44, 14, 16]),
        _annotation(10, 11, 3, [10, 10, 1, 5]),
    ]
    sizes = {9: (48, 64), 2: (64, 48), 5: (50, 50), 4: (40, 60), 7: (60, 40), 11: (64, 48)}
    data = {
        "info": {"description": "maskrcnn_benchmark test fixture"},
        "images": [
            {"id": i, "file_name": "{:06d}.png".format(i), "width": w, "height": h}
            for i, (w, h) in sizes.items()
        ],
        "annotations": annotations,
        "categories": [
            {"id": 3, "name": "tricycle", "supercategory": "vehicle"},
            {"id": 1, "name": "apple", "supercategory": "food"},
            {"id": 7, "name": "giraffe", "supercategory": "animal"},
        ],
    }
    _draw_images(
        {"images": data["images"], "annotations": [a for a in annotations if not a["iscrowd"]]},
        lambda image: os.path.join(root, image["file_name"]),
    )
    ann_file = os.path.join(directory, "annotations", "instances_fixture.json")
    write_json(ann_file, data)
    return DatasetFixture(ann_file, root, data)


LVIS_IMAGE_SIZES = ((32, 24), (24, 32), (40, 30), (30, 40))


def _lvis_objects(rng, width, height, categories, weights):
    """1 to 3 non-overlapping boxes (one per image quadrant) with long-tailed categories."""
    quadrants = rng.sample(range(4), rng.randint(1, 3))
    objects = []
    half_w, half_h = width // 2, height // 2
    for q in quadrants:
        x0, y0 = (q % 2) * half_w, (q // 2) * half_h
        w, h = rng.randint(3, half_w - 1), rng.randint(3, half_h - 1)
        x, y = x0 + rng.randint(0, half_w - w), y0 + rng.randint(0, half_h - h)
        objects.append((rng.choices(categories, weights)[0], [x, y, w, h]))
    return objects


def lvis_fixture_data(version="v1", num_images=16, num_categories=6, seed=0):
    """An LVIS-format annotation dict with long-tailed category counts (category k drawn with
    weight 1 / k^2), as LVIS writes it: v0.5 images have COCO-2014-style file_names, v1 images
    only a coco_url (split train2017 or val2017); images carry neg_category_ids and
    not_exhaustive_category_ids, categories their frequency and counts. Category records are
    listed out of id order."""
    rng = random.Random(seed)
    category_ids = list(range(1, num_categories + 1))
    weights = [1.0 / k ** 2 for k in category_ids]
    images, annotations = [], []
    for n in range(num_images):
        image_id = 100 + 7 * n
        width, height = LVIS_IMAGE_SIZES[n % len(LVIS_IMAGE_SIZES)]
        objects = _lvis_objects(rng, width, height, category_ids, weights)
        present = sorted({c for c, _ in objects})
        absent = [c for c in category_ids if c not in present]
        image = {
            "id": image_id,
            "width": width,
            "height": height,
            "neg_category_ids": rng.sample(absent, min(1, len(absent))),
            "not_exhaustive_category_ids": present[:1] if n % 3 == 0 else [],
            "license": 1,
            "flickr_url": "http://farm.example.org/{}.jpg".format(image_id),
        }
        split = "train2017" if n % 4 else "val2017"
        image["coco_url"] = "http://images.cocodataset.org/{}/{:012d}.jpg".format(split, image_id)
        if version == "v0.5":
            coco2014_split = "train2014" if split == "train2017" else "val2014"
            image["file_name"] = "COCO_{}_{:012d}.jpg".format(coco2014_split, image_id)
        images.append(image)
        for category_id, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "segmentation": [rectangle_polygon(bbox)],
                }
            )

    categories = []
    for c in category_ids:
        image_count = len({a["image_id"] for a in annotations if a["category_id"] == c})
        categories.append(
            {
                "id": c,
                "name": "category_{}".format(c),
                "synset": "category_{}.n.01".format(c),
                "synonyms": ["category_{}".format(c)],
                "def": "test category {}".format(c),
                "frequency": "f" if image_count > 10 else ("c" if image_count > 1 else "r"),
                "image_count": image_count,
                "instance_count": sum(a["category_id"] == c for a in annotations),
            }
        )
    order = rng.sample(range(num_categories), num_categories)
    return {
        "info": {"version": version},
        "licenses": [{"id": 1, "name": "test"}],
        "images": images,
        "annotations": annotations,
        "categories": [categories[i] for i in order],
    }


def lvis_image_path(root, image):
    """Where LVISDataset expects an image record's file: v1 root/<split>/<file> from coco_url;
    v0.5 root/<12-digit id>.jpg (the COCO 2017 name of its COCO-2014 file_name)."""
    if "file_name" in image:
        return os.path.join(root, image["file_name"].split("_")[-1])
    split, file_name = image["coco_url"].split("/")[-2:]
    return os.path.join(root, split, file_name)


def write_lvis_fixture(directory, version="v1", num_images=16, num_categories=6, seed=0):
    """Write ``lvis_fixture_data(...)`` and its JPEG images under ``directory``."""
    data = lvis_fixture_data(version, num_images, num_categories, seed)
    root = os.path.join(directory, "lvis_{}_images".format(version))
    _draw_images(data, lambda image: lvis_image_path(root, image))
    ann_file = os.path.join(directory, "lvis_{}_train.json".format(version))
    write_json(ann_file, data)
    return DatasetFixture(ann_file, root, data)


_CATALOG_TEMPLATE = '''"""DatasetCatalog of test fixtures (written by tests/fixtures_data.py)."""


class DatasetCatalog:
    DATASETS = {datasets!r}

    @staticmethod
    def get(name):
        entry = DatasetCatalog.DATASETS[name]
        return dict(
            factory=entry["factory"], args=dict(root=entry["root"], ann_file=entry["ann_file"])
        )
'''


def write_paths_catalog(path, entries):
    """Write a PATHS_CATALOG file whose DatasetCatalog knows ``entries``:
    name -> (factory class name, DatasetFixture)."""
    datasets = {
        name: {"factory": factory, "root": fixture.root, "ann_file": fixture.ann_file}
        for name, (factory, fixture) in entries.items()
    }
    with open(path, "w") as f:
        f.write(_CATALOG_TEMPLATE.format(datasets=datasets))
    return path
