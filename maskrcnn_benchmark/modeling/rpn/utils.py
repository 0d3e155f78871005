"""Reshaping of per-level RPN head outputs into per-anchor rows, in the anchors' order."""
from ..utils import cat


def permute_and_flatten(layer, N, A, C, H, W):
    """(N, A * C, H, W) -> (N, H * W * A, C), rows ordered (y, x, anchor) like
    ``AnchorGenerator.grid_anchors``."""
    layer = layer.view(N, -1, C, H, W)
    layer = layer.permute(0, 3, 4, 1, 2)
    return layer.reshape(N, -1, C)


def concat_box_prediction_layers(box_cls, box_regression):
    """Flatten and concatenate the head outputs of all levels.

    Arguments:
        box_cls (list[Tensor]): (N, A * C, H_l, W_l) per level.
        box_regression (list[Tensor]): (N, A * 4, H_l, W_l) per level.

    Returns:
        box_cls (Tensor): (N * sum_l H_l * W_l * A, C), image-major, then level, then
            (y, x, anchor): the order of the images' anchors concatenated over levels.
        box_regression (Tensor): (N * sum_l H_l * W_l * A, 4), same order.
    """
    box_cls_flattened = []
    box_regression_flattened = []
    for box_cls_per_level, box_regression_per_level in zip(box_cls, box_regression):
        N, AxC, H, W = box_cls_per_level.shape
        A = box_regression_per_level.shape[1] // 4
        C = AxC // A
        box_cls_flattened.append(permute_and_flatten(box_cls_per_level, N, A, C, H, W))
        box_regression_flattened.append(
            permute_and_flatten(box_regression_per_level, N, A, 4, H, W)
        )
    box_cls = cat(box_cls_flattened, dim=1).reshape(-1, C)
    box_regression = cat(box_regression_flattened, dim=1).reshape(-1, 4)
    return box_cls, box_regression
