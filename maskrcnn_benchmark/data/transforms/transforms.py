"""Per-image training/test transforms. Each takes and returns (image, target), where target
is the image's BoxList (with its masks), so boxes and masks follow the image through resizing
and flipping. Random choices use Python's ``random`` module, as upstream."""
import random

import torchvision
from torchvision.transforms import functional as F

from maskrcnn_benchmark.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM


class Compose(object):
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        lines = ["    {}".format(t) for t in self.transforms]
        return "{}(\n{}\n)".format(self.__class__.__name__, "\n".join(lines))


class Resize(object):
    """Resize a PIL image so that its shorter side is a size drawn from ``min_size``, unless the
    longer side would then exceed ``max_size`` (pixels).

    Upstream's rule: with the cap, size = round(max_size * short / long); the longer side is
    int(size * long / short), truncated. The image is resized bilinearly, the target by the
    per-axis ratios of the new size.
    """

    def __init__(self, min_size, max_size):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        self.min_size = min_size
        self.max_size = max_size

    def get_size(self, image_size):
        """(height, width) of the output for an image of ``image_size`` = (width, height)."""
        w, h = image_size
        size = random.choice(self.min_size)
        if self.max_size is not None:
            short_side, long_side = float(min(w, h)), float(max(w, h))
            if long_side / short_side * size > self.max_size:
                size = int(round(self.max_size * short_side / long_side))

        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        image = F.resize(image, self.get_size(image.size))
        if target is None:
            return image
        return image, target.resize(image.size)


class RandomHorizontalFlip(object):
    """Mirror left-right with probability ``prob``."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, target):
        if random.random() < self.prob:
            image = F.hflip(image)
            target = target.transpose(FLIP_LEFT_RIGHT)
        return image, target


class RandomVerticalFlip(object):
    """Mirror top-bottom with probability ``prob``."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, target):
        if random.random() < self.prob:
            image = F.vflip(image)
            target = target.transpose(FLIP_TOP_BOTTOM)
        return image, target


class ColorJitter(object):
    """torchvision's ColorJitter on the image; the target is unchanged. 0 turns a factor off."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.color_jitter = torchvision.transforms.ColorJitter(
            brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
        )

    def __call__(self, image, target):
        return self.color_jitter(image), target


class ToTensor(object):
    """PIL image -> float (3, H, W) tensor in [0, 1], RGB."""

    def __call__(self, image, target):
        return F.to_tensor(image), target


class Normalize(object):
    """(image - mean) / std per channel. With ``to_bgr255`` the [0, 1] RGB tensor is first
    turned into BGR in [0, 255], the input of Caffe2-trained backbones."""

    def __init__(self, mean, std, to_bgr255=True):
        self.mean = mean
        self.std = std
        self.to_bgr255 = to_bgr255

    def __call__(self, image, target=None):
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255
        image = F.normalize(image, mean=self.mean, std=self.std)
        if target is None:
            return image
        return image, target
