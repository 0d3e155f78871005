"""BoxList: a set of boxes of one image, with per-box fields (labels, scores, masks, ...).

Boxes follow maskrcnn-benchmark's inclusive-pixel convention ("TO_REMOVE = 1"): a box
[x1, y1, x2, y2] covers the pixels x1..x2, so its width is x2 - x1 + 1.
"""
import torch

# Transpose methods, numbered as PIL.Image's.
FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")
# Width of a box in the inclusive-pixel convention is x2 - x1 + TO_REMOVE.
TO_REMOVE = 1


def _check_mode(mode):
    if mode not in _MODES:
        raise ValueError("mode should be 'xyxy' or 'xywh', got {!r}".format(mode))


class BoxList(object):
    """A float32 (N, 4) box tensor ``bbox`` plus the image size it refers to.

    Arguments:
        bbox: (N, 4) tensor or nested list; pixel coordinates.
        image_size: (width, height) of the image in pixels.
        mode: "xyxy" (inclusive corners) or "xywh" (top-left corner, width, height).

    Per-box data lives in ``extra_fields``: tensors whose first dimension is N, or objects
    (e.g. SegmentationMask) that implement the same geometric methods and indexing.
    """

    def __init__(self, bbox, image_size, mode="xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if bbox.ndimension() != 2:
            raise ValueError(
                "bbox should have 2 dimensions (N, 4), got shape {}; "
                "use .reshape(-1, 4) for an empty set of boxes".format(tuple(bbox.shape))
            )
        if bbox.size(-1) != 4:
            raise ValueError(
                "last dimension of bbox should have a size of 4, got shape {}".format(
                    tuple(bbox.shape)
                )
            )
        _check_mode(mode)
        if len(image_size) != 2:
            raise ValueError(
                "image_size should be (width, height), got {!r}".format(image_size)
            )

        self.bbox = bbox
        self.size = tuple(image_size)  # (image_width, image_height)
        self.mode = mode
        self.extra_fields = {}

    # Fields

    def add_field(self, field, field_data):
        self.extra_fields[field] = field_data

    def get_field(self, field):
        return self.extra_fields[field]

    def has_field(self, field):
        return field in self.extra_fields

    def fields(self):
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, bbox):
        for k, v in bbox.extra_fields.items():
            self.extra_fields[k] = v

    def copy_with_fields(self, fields, skip_missing=False):
        """A BoxList sharing this one's boxes, with only the given field(s).

        Raises KeyError for a missing field unless skip_missing is True.
        """
        bbox = BoxList(self.bbox, self.size, self.mode)
        if not isinstance(fields, (list, tuple)):
            fields = [fields]
        for field in fields:
            if self.has_field(field):
                bbox.add_field(field, self.get_field(field))
            elif not skip_missing:
                raise KeyError("Field '{}' not found in {}".format(field, self))
        return bbox

    # Modes

    def convert(self, mode):
        """This BoxList in another mode (self if already there). xywh -> xyxy: x2 = x + w - 1."""
        _check_mode(mode)
        if mode == self.mode:
            return self
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((xmin, ymin, xmax, ymax), dim=-1)
        else:
            bbox = torch.cat(
                (xmin, ymin, xmax - xmin + TO_REMOVE, ymax - ymin + TO_REMOVE), dim=-1
            )
        converted = BoxList(bbox, self.size, mode=mode)
        converted._copy_extra_fields(self)
        return converted

    def _split_into_xyxy(self):
        """Four (N, 1) tensors xmin, ymin, xmax, ymax (widths below 1 give xmax = xmin)."""
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        xmin, ymin, w, h = self.bbox.split(1, dim=-1)
        return (
            xmin,
            ymin,
            xmin + (w - TO_REMOVE).clamp(min=0),
            ymin + (h - TO_REMOVE).clamp(min=0),
        )

    def _with_transformed_fields(self, bbox, size, transform):
        """A new BoxList on ``bbox`` (xyxy) with every non-tensor field passed through transform."""
        result = BoxList(bbox, size, mode="xyxy")
        for k, v in self.extra_fields.items():
            if not isinstance(v, torch.Tensor):
                v = transform(v)
            result.add_field(k, v)
        return result.convert(self.mode)

    # Geometry

    def resize(self, size, *args, **kwargs):
        """A copy scaled to ``size`` = (width, height), with separate x and y ratios.

        Non-tensor fields (e.g. masks) are resized with ``field.resize(size, *args, **kwargs)``.
        """
        ratio_width, ratio_height = (
            float(s) / float(s_orig) for s, s_orig in zip(size, self.size)
        )
        if ratio_width == ratio_height:
            scaled = BoxList(self.bbox * ratio_width, size, mode=self.mode)
            for k, v in self.extra_fields.items():
                if not isinstance(v, torch.Tensor):
                    v = v.resize(size, *args, **kwargs)
                scaled.add_field(k, v)
            return scaled

        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        scaled_box = torch.cat(
            (xmin * ratio_width, ymin * ratio_height, xmax * ratio_width, ymax * ratio_height),
            dim=-1,
        )
        return self._with_transformed_fields(
            scaled_box, size, lambda field: field.resize(size, *args, **kwargs)
        )

    def transpose(self, method):
        """A flipped copy. ``method`` is FLIP_LEFT_RIGHT or FLIP_TOP_BOTTOM.

        FLIP_LEFT_RIGHT maps x to W - x - 1 (inclusive pixels). FLIP_TOP_BOTTOM maps y to
        H - y, without the -1: this inconsistency is upstream maskrcnn-benchmark's and is
        kept on purpose so that results stay comparable with it.
        """
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise NotImplementedError("Only FLIP_LEFT_RIGHT and FLIP_TOP_BOTTOM implemented")

        image_width, image_height = self.size
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            flipped = (image_width - xmax - TO_REMOVE, ymin, image_width - xmin - TO_REMOVE, ymax)
        else:
            flipped = (xmin, image_height - ymax, xmax, image_height - ymin)
        return self._with_transformed_fields(
            torch.cat(flipped, dim=-1), self.size, lambda field: field.transpose(method)
        )

    def crop(self, box):
        """A copy in the frame of ``box`` = (left, upper, right, lower), of size (right - left,
        lower - upper); coordinates are clamped to [0, right - left] x [0, lower - upper].

        Boxes that fall outside become zero-size boxes on the border; they are not removed.
        """
        if isinstance(box, torch.Tensor):
            box = box.tolist()
        left, upper, right, lower = box
        w, h = right - left, lower - upper
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        cropped_box = torch.cat(
            (
                (xmin - left).clamp(min=0, max=w),
                (ymin - upper).clamp(min=0, max=h),
                (xmax - left).clamp(min=0, max=w),
                (ymax - upper).clamp(min=0, max=h),
            ),
            dim=-1,
        )
        return self._with_transformed_fields(cropped_box, (w, h), lambda field: field.crop(box))

    def clip_to_image(self, remove_empty=True):
        """Clamp boxes to [0, W - 1] x [0, H - 1] (in place for xyxy, as upstream).

        With remove_empty, returns only the boxes with x2 > x1 and y2 > y1 (strictly), so
        boxes one pixel wide are dropped, as upstream does.
        """
        boxes = self.convert("xyxy")
        width, height = self.size
        boxes.bbox[:, 0].clamp_(min=0, max=width - TO_REMOVE)
        boxes.bbox[:, 1].clamp_(min=0, max=height - TO_REMOVE)
        boxes.bbox[:, 2].clamp_(min=0, max=width - TO_REMOVE)
        boxes.bbox[:, 3].clamp_(min=0, max=height - TO_REMOVE)
        if remove_empty:
            keep = (boxes.bbox[:, 3] > boxes.bbox[:, 1]) & (boxes.bbox[:, 2] > boxes.bbox[:, 0])
            boxes = boxes[keep]
        return boxes.convert(self.mode)

    def area(self):
        """(N,) areas in pixels: (x2 - x1 + 1) * (y2 - y1 + 1) in xyxy, w * h in xywh."""
        box = self.bbox
        if self.mode == "xyxy":
            return (box[:, 2] - box[:, 0] + TO_REMOVE) * (box[:, 3] - box[:, 1] + TO_REMOVE)
        return box[:, 2] * box[:, 3]

    # Tensor-like methods

    def to(self, device):
        moved = BoxList(self.bbox.to(device), self.size, self.mode)
        for k, v in self.extra_fields.items():
            if hasattr(v, "to"):
                v = v.to(device)
            moved.add_field(k, v)
        return moved

    def __getitem__(self, item):
        """Select boxes (and every field) by int, slice, index tensor or boolean mask."""
        if isinstance(item, int):
            item = torch.tensor([item], dtype=torch.int64)
        selected = BoxList(self.bbox[item], self.size, self.mode)
        for k, v in self.extra_fields.items():
            selected.add_field(k, v[item])
        return selected

    def __len__(self):
        return self.bbox.shape[0]

    def __repr__(self):
        return "{}(num_boxes={}, image_width={}, image_height={}, mode={})".format(
            self.__class__.__name__, len(self), self.size[0], self.size[1], self.mode
        )
