"""ImageList: images of different sizes zero-padded into one batch tensor."""
import math

import torch


class ImageList(object):
    """A padded (N, C, H, W) batch and the (height, width) of each image before padding.

    Arguments:
        tensors (Tensor): (N, C, H, W) batch.
        image_sizes (list[tuple[int, int]]): (height, width) per image.
    """

    def __init__(self, tensors, image_sizes):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, *args, **kwargs):
        return ImageList(self.tensors.to(*args, **kwargs), self.image_sizes)


def _image_size(tensor):
    return tuple(int(s) for s in tensor.shape[-2:])


def to_image_list(tensors, size_divisible=0):
    """Batch images into an ImageList.

    Arguments:
        tensors: an ImageList (returned as is), a (C, H, W) or (N, C, H, W) tensor, or a
            list/tuple of (C, H, W) tensors.
        size_divisible (int): if > 0, the padded height and width are rounded up to a
            multiple of it (FPN needs 32).

    Images are copied into the top-left corner of a zero tensor of the largest size.
    """
    if isinstance(tensors, ImageList):
        return tensors
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() == 3:
            tensors = tensors[None]
        if tensors.dim() != 4:
            raise ValueError(
                "to_image_list expects a (C, H, W) or (N, C, H, W) tensor, got shape {}".format(
                    tuple(tensors.shape)
                )
            )
        if size_divisible <= 0:
            return ImageList(tensors, [_image_size(t) for t in tensors])
        tensors = list(tensors.unbind(0))
    if not isinstance(tensors, (list, tuple)):
        raise TypeError("Unsupported type for to_image_list: {}".format(type(tensors)))
    if len(tensors) == 0:
        raise ValueError("to_image_list needs at least one image")
    bad = [
        tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        for t in tensors
        if not (isinstance(t, torch.Tensor) and t.dim() == 3)
    ]
    if bad:
        raise ValueError("to_image_list expects (C, H, W) tensors, got {}".format(bad))

    max_size = [max(sizes) for sizes in zip(*[img.shape for img in tensors])]
    if size_divisible > 0:
        stride = size_divisible
        max_size[1] = int(math.ceil(max_size[1] / stride) * stride)
        max_size[2] = int(math.ceil(max_size[2] / stride) * stride)

    batched_imgs = tensors[0].new_zeros([len(tensors)] + max_size)
    for img, pad_img in zip(tensors, batched_imgs):
        pad_img[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    return ImageList(batched_imgs, [_image_size(img) for img in tensors])
