"""BatchCollator: turns a list of dataset samples into the batch the model takes."""
from maskrcnn_benchmark.structures.image_list import to_image_list


class BatchCollator(object):
    """[(image (3, H, W), BoxList, index), ...] -> (ImageList, tuple of BoxLists, tuple of
    indices). Images are zero-padded to a common size, rounded up to a multiple of
    ``size_divisible`` when it is positive (FPN needs 32)."""

    def __init__(self, size_divisible=0):
        self.size_divisible = size_divisible

    def __call__(self, batch):
        images, targets, img_ids = zip(*batch)
        return to_image_list(images, self.size_divisible), targets, img_ids
