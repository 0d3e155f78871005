"""Instance segmentations of one image, as polygons or as binary masks.

* ``BinaryMaskList``: all instances as one (N, H, W) uint8 tensor.
* ``PolygonInstance``: the polygons (float32 [x0, y0, x1, y1, ...] tensors) of one instance.
* ``PolygonList``: the PolygonInstances of all instances.
* ``SegmentationMask``: wraps either of the two lists ("poly" or "mask" mode) behind one API,
  the one BoxList expects of its fields (transpose, crop, resize, indexing).

Sizes are (width, height) in pixels. Conventions follow maskrcnn-benchmark: polygon flips map
x to W - x - 1 (and y to H - y - 1); poly -> mask rasterises with pycocotools; mask -> poly
traces outer contours with OpenCV.
"""
import numbers

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F

from maskrcnn_benchmark.utils import cv2_util

# Transpose methods, numbered as PIL.Image's (the same values as in bounding_box).
FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1
# Flipped pixel coordinate: x' = W - x - TO_REMOVE.
TO_REMOVE = 1


def _check_transpose_method(method):
    if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
        raise NotImplementedError("Only FLIP_LEFT_RIGHT and FLIP_TOP_BOTTOM implemented")


def _pair(size):
    """(width, height) from a 2-sequence or from one number used for both sides."""
    if isinstance(size, numbers.Real):
        return size, size
    width, height = size
    return width, height


def _crop_window(xmin, ymin, xmax, ymax, size):
    """Clamp the crop box (xyxy) into an image of ``size`` = (width, height).

    xmin is clamped to [0, W - 1] and xmax to [0, W] (likewise y), then the window is made at
    least one pixel wide and high. Like LST's fork, no validity check runs before the clamp,
    so degenerate or inverted boxes (tiny LVIS proposals) give a 1-pixel window, not an error.
    """
    width, height = size
    xmin = min(max(xmin, 0), width - 1)
    ymin = min(max(ymin, 0), height - 1)
    xmax = min(max(xmax, 0), width)
    ymax = min(max(ymax, 0), height)
    xmax = max(xmax, xmin + 1)
    ymax = max(ymax, ymin + 1)
    return xmin, ymin, xmax, ymax


def _raster_size(size):
    """Integer (width, height) of the pixel grid for a possibly fractional size."""
    return tuple(int(round(float(s))) for s in size)


def _resize_masks(masks, width, height):
    """Bilinearly resize (N, H, W) masks to (N, height, width), keeping their dtype as upstream
    does (so uint8 values below 1 truncate to 0)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, height, width))
    resized = F.interpolate(
        masks[None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[0]
    return resized.type_as(masks)


def _decode_rles(rles, size):
    """(N, H, W) uint8 masks from COCO/LVIS RLE dicts (compressed or uncompressed), resized
    to ``size`` = (width, height) if the RLEs were encoded at another size."""
    compressed = []
    for k, rle in enumerate(rles):
        if not (isinstance(rle, dict) and "counts" in rle and "size" in rle):
            raise TypeError("mask {} is not an RLE dict with 'counts' and 'size'".format(k))
        rle_height, rle_width = rle["size"]
        if isinstance(rle["counts"], (list, tuple)):
            rle = mask_utils.frPyObjects(rle, rle_height, rle_width)
        elif isinstance(rle["counts"], str):
            rle = dict(rle, counts=rle["counts"].encode("ascii"))
        compressed.append(rle)

    rle_sizes = [tuple(rle["size"]) for rle in compressed]
    if len(set(rle_sizes)) != 1:
        raise ValueError("All the RLE sizes must be the same, got {}".format(rle_sizes))
    masks = torch.from_numpy(mask_utils.decode(compressed)).permute(2, 0, 1)  # (N, H, W)

    rle_height, rle_width = rle_sizes[0]
    width, height = _raster_size(size)
    if (width, height) != (rle_width, rle_height):
        masks = _resize_masks(masks, width, height)
    return masks


class BinaryMaskList(object):
    """Binary masks of all instances of an image, as one (N, H, W) tensor ``masks``.

    Arguments:
        masks: a (N, H, W) or (H, W) tensor, a list of (H, W) tensors, a list of RLE dicts
            (COCO/LVIS, "counts" compressed or not; resized to ``size`` if encoded at another
            size), or a BinaryMaskList. The data is copied.
        size: (width, height) of the image.
    """

    def __init__(self, masks, size):
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError("size should be (width, height), got {!r}".format(size))

        if isinstance(masks, BinaryMaskList):
            masks = masks.masks.clone()
        elif isinstance(masks, torch.Tensor):
            masks = masks.clone()
        elif isinstance(masks, (list, tuple)):
            if len(masks) == 0:
                width, height = _raster_size(size)
                masks = torch.zeros((0, height, width), dtype=torch.uint8)
            elif all(isinstance(m, torch.Tensor) for m in masks):
                masks = torch.stack(masks, dim=0)
            elif all(isinstance(m, dict) for m in masks):
                masks = _decode_rles(masks, size)
            else:
                raise TypeError(
                    "masks should be tensors or RLE dicts, got {}".format(
                        sorted({type(m).__name__ for m in masks})
                    )
                )
        else:
            raise TypeError(
                "masks should be a tensor, a list of tensors or RLE dicts, or a "
                "BinaryMaskList, got {}".format(type(masks).__name__)
            )

        if masks.dim() == 2:
            masks = masks[None]
        if masks.dim() != 3:
            raise ValueError("masks should be (N, H, W), got shape {}".format(tuple(masks.shape)))
        if masks.shape[1] != size[1] or masks.shape[2] != size[0]:
            raise ValueError(
                "masks of shape {} do not match the image size (width, height) = {}".format(
                    tuple(masks.shape), tuple(size)
                )
            )
        self.masks = masks
        self.size = tuple(size)

    def transpose(self, method):
        _check_transpose_method(method)
        dim = 1 if method == FLIP_TOP_BOTTOM else 2
        return BinaryMaskList(self.masks.flip(dim), self.size)

    def crop(self, box):
        """Masks inside ``box`` (xyxy, rounded to whole pixels and clamped to the image)."""
        xmin, ymin, xmax, ymax = _crop_window(
            *[round(float(b)) for b in box], size=_raster_size(self.size)
        )
        cropped = self.masks[:, ymin:ymax, xmin:xmax]
        return BinaryMaskList(cropped, (xmax - xmin, ymax - ymin))

    def resize(self, size):
        """Bilinear resize to ``size`` = (width, height) or one number for both."""
        width, height = map(int, _pair(size))
        if width <= 0 or height <= 0:
            raise ValueError("resize needs a positive size, got {!r}".format(size))
        return BinaryMaskList(_resize_masks(self.masks, width, height), (width, height))

    def convert_to_polygon(self):
        """PolygonList of the outer contours of each mask (contours under 3 points dropped)."""
        if self.masks.numel() == 0:
            return PolygonList([], self.size)
        return PolygonList(self._find_contours(), self.size)

    def _find_contours(self):
        instances = []
        for mask in self.masks.detach().cpu().to(torch.uint8).numpy():
            contours, _ = cv2_util.findContours(
                np.ascontiguousarray(mask), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_TC89_L1
            )
            instances.append(
                [contour.reshape(-1).tolist() for contour in contours if len(contour) >= 3]
            )
        return instances

    def to(self, *args, **kwargs):
        """Masks stay on the CPU, as upstream: the mask targets are computed there."""
        return self

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, index):
        return BinaryMaskList(self.masks[index], self.size)

    def __iter__(self):
        return iter(self.masks)

    def __repr__(self):
        return "{}(num_instances={}, image_width={}, image_height={})".format(
            self.__class__.__name__, len(self.masks), self.size[0], self.size[1]
        )


def _as_polygon(coordinates, index):
    """A float32 [x0, y0, x1, y1, ...] tensor; ValueError unless it has at least 3 points."""
    polygon = torch.as_tensor(coordinates, dtype=torch.float32)
    if polygon.dim() != 1:
        raise ValueError(
            "polygon {} should be a flat list [x0, y0, x1, y1, ...], got shape {}".format(
                index, tuple(polygon.shape)
            )
        )
    if polygon.numel() % 2 != 0 or polygon.numel() < 6:
        raise ValueError(
            "polygon {} has {} coordinates; a polygon needs an even number of at least 6 "
            "(3 points). Drop such polygons when loading the annotations.".format(
                index, polygon.numel()
            )
        )
    return polygon


class PolygonInstance(object):
    """The polygons that make up the mask of one instance.

    Arguments:
        polygons: a list of flat coordinate lists/tensors [x0, y0, x1, y1, ...], each of at
            least 3 points, or a PolygonInstance (its polygons are shared, not copied).
            An empty list is an empty mask.
        size: (width, height) of the image.
    """

    def __init__(self, polygons, size):
        if isinstance(polygons, PolygonInstance):
            polygons = polygons.polygons
        elif not isinstance(polygons, (list, tuple)):
            raise TypeError(
                "polygons should be a list of coordinate lists, got {}".format(
                    type(polygons).__name__
                )
            )
        self.polygons = [_as_polygon(p, k) for k, p in enumerate(polygons)]
        self.size = tuple(size)

    def transpose(self, method):
        """Flip: x' = W - x - 1 (FLIP_LEFT_RIGHT) or y' = H - y - 1 (FLIP_TOP_BOTTOM)."""
        _check_transpose_method(method)
        width, height = self.size
        offset, extent = (0, width) if method == FLIP_LEFT_RIGHT else (1, height)
        flipped = []
        for poly in self.polygons:
            p = poly.clone()
            p[offset::2] = extent - poly[offset::2] - TO_REMOVE
            flipped.append(p)
        return PolygonInstance(flipped, size=self.size)

    def crop(self, box):
        """Shift the polygons into the frame of ``box`` (xyxy, float, clamped to the image).

        Coordinates are not clipped; rasterising drops what falls outside.
        """
        xmin, ymin, xmax, ymax = _crop_window(*map(float, box), size=self.size)
        cropped = []
        for poly in self.polygons:
            p = poly.clone()
            p[0::2] -= xmin
            p[1::2] -= ymin
            cropped.append(p)
        return PolygonInstance(cropped, size=(xmax - xmin, ymax - ymin))

    def resize(self, size):
        """Scale to ``size`` = (width, height) or one number for both."""
        size = _pair(size)
        ratio_w, ratio_h = (float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratio_w == ratio_h:
            return PolygonInstance([p * ratio_w for p in self.polygons], size)
        scaled = []
        for poly in self.polygons:
            p = poly.clone()
            p[0::2] *= ratio_w
            p[1::2] *= ratio_h
            scaled.append(p)
        return PolygonInstance(scaled, size=size)

    def convert_to_binarymask(self):
        """(H, W) uint8 mask, the union of the polygons, rasterised by pycocotools."""
        width, height = _raster_size(self.size)
        if not self.polygons:
            return torch.zeros((height, width), dtype=torch.uint8)
        rles = mask_utils.frPyObjects([p.double().numpy() for p in self.polygons], height, width)
        return torch.from_numpy(mask_utils.decode(mask_utils.merge(rles)))

    def __len__(self):
        return len(self.polygons)

    def __repr__(self):
        return "{}(num_groups={}, image_width={}, image_height={})".format(
            self.__class__.__name__, len(self.polygons), self.size[0], self.size[1]
        )


class PolygonList(object):
    """The PolygonInstances of all instances of an image.

    Arguments:
        polygons: a list with one entry per instance, each a list of flat coordinate lists
            or a PolygonInstance; or a PolygonList (whose size is then used).
        size: (width, height) of the image.

    Unlike upstream, an instance without polygons is kept (as an empty mask) so that the
    instances stay aligned with their boxes, and a malformed polygon raises ValueError
    naming its instance instead of being dropped silently.
    """

    def __init__(self, polygons, size):
        if isinstance(polygons, PolygonList):
            size = polygons.size
            polygons = polygons.polygons
        elif not isinstance(polygons, (list, tuple)):
            raise TypeError(
                "polygons should be a list (one entry per instance) or a PolygonList, got "
                "{}".format(type(polygons).__name__)
            )
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError("size should be (width, height), got {!r}".format(size))

        self.polygons = []
        for i, instance in enumerate(polygons):
            try:
                self.polygons.append(PolygonInstance(instance, size))
            except (TypeError, ValueError) as error:
                raise type(error)("instance {}: {}".format(i, error)) from error
        self.size = tuple(size)

    def transpose(self, method):
        _check_transpose_method(method)
        return PolygonList([p.transpose(method) for p in self.polygons], size=self.size)

    def crop(self, box):
        """Crop every instance to ``box``; the size is that of the clamped window."""
        xmin, ymin, xmax, ymax = _crop_window(*map(float, box), size=self.size)
        cropped = [p.crop(box) for p in self.polygons]
        return PolygonList(cropped, (xmax - xmin, ymax - ymin))

    def resize(self, size):
        size = _pair(size)
        return PolygonList([p.resize(size) for p in self.polygons], size)

    def to(self, *args, **kwargs):
        """Polygons stay on the CPU."""
        return self

    def convert_to_binarymask(self):
        """BinaryMaskList of the rasterised instances, on the integer pixel grid of size."""
        width, height = _raster_size(self.size)
        if self.polygons:
            masks = torch.stack([p.convert_to_binarymask() for p in self.polygons])
        else:
            masks = torch.zeros((0, height, width), dtype=torch.uint8)
        return BinaryMaskList(masks, size=(width, height))

    def __len__(self):
        return len(self.polygons)

    def __getitem__(self, item):
        """Select instances by int, slice, index tensor/list or boolean mask."""
        if isinstance(item, int):
            selected = [self.polygons[item]]
        elif isinstance(item, slice):
            selected = self.polygons[item]
        else:
            if isinstance(item, torch.Tensor):
                if item.dtype == torch.bool:
                    item = item.nonzero().reshape(-1)
                item = item.reshape(-1).tolist()
            selected = [self.polygons[i] for i in item]
        return PolygonList(selected, size=self.size)

    def __iter__(self):
        return iter(self.polygons)

    def __repr__(self):
        return "{}(num_instances={}, image_width={}, image_height={})".format(
            self.__class__.__name__, len(self.polygons), self.size[0], self.size[1]
        )


class SegmentationMask(object):
    """The segmentations of all instances of an image, as polygons or binary masks.

    Arguments:
        instances: for mode "poly", what PolygonList accepts (per instance, a list of flat
            polygons); for mode "mask", what BinaryMaskList accepts (tensors or RLE dicts).
        size: (width, height); numbers or 0-dim tensors.
        mode: "poly" or "mask".
    """

    def __init__(self, instances, size, mode="poly"):
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError("size should be (width, height), got {!r}".format(size))
        size = tuple(s.item() if isinstance(s, torch.Tensor) else s for s in size)
        if not all(isinstance(s, numbers.Real) for s in size):
            raise ValueError("size should hold numbers, got {!r}".format(size))

        if mode == "poly":
            self.instances = PolygonList(instances, size)
        elif mode == "mask":
            self.instances = BinaryMaskList(instances, size)
        else:
            raise ValueError("Unknown mode {!r}: use 'poly' or 'mask'".format(mode))
        self.mode = mode
        self.size = size

    def transpose(self, method):
        return SegmentationMask(self.instances.transpose(method), self.size, self.mode)

    def crop(self, box):
        cropped = self.instances.crop(box)
        return SegmentationMask(cropped, cropped.size, self.mode)

    def resize(self, size, *args, **kwargs):
        resized = self.instances.resize(size)
        return SegmentationMask(resized, resized.size, self.mode)

    def to(self, *args, **kwargs):
        """Segmentations stay on the CPU, as upstream."""
        return self

    def convert(self, mode):
        """This segmentation in mode "poly" or "mask" (self if already there)."""
        if mode == self.mode:
            return self
        if mode == "poly":
            converted = self.instances.convert_to_polygon()
        elif mode == "mask":
            converted = self.instances.convert_to_binarymask()
        else:
            raise ValueError("Unknown mode {!r}: use 'poly' or 'mask'".format(mode))
        return SegmentationMask(converted, converted.size, mode)

    def get_mask_tensor(self):
        """(N, H, W) uint8 masks; (H, W) when there is a single instance, as upstream."""
        instances = self.instances
        if self.mode == "poly":
            instances = instances.convert_to_binarymask()
        return instances.masks.squeeze(0)

    def __len__(self):
        return len(self.instances)

    def __getitem__(self, item):
        return SegmentationMask(self.instances[item], self.size, self.mode)

    def __iter__(self):
        """Yields one single-instance SegmentationMask per instance."""
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        return "{}(num_instances={}, image_width={}, image_height={}, mode={})".format(
            self.__class__.__name__, len(self.instances), self.size[0], self.size[1], self.mode
        )
