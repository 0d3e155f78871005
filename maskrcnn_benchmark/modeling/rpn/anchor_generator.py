"""Anchors: Detectron's reference windows per stride, shifted over every feature-map cell."""
import torch
from torch import nn

from maskrcnn_benchmark.structures.bounding_box import BoxList


class BufferList(nn.Module):
    """Like nn.ParameterList, for buffers: they are saved in the state dict as ``<name>.0``,
    ``<name>.1``, ... and follow the module across devices."""

    def __init__(self, buffers=None):
        super(BufferList, self).__init__()
        if buffers is not None:
            self.extend(buffers)

    def extend(self, buffers):
        offset = len(self)
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(offset + i), buffer)
        return self

    def __len__(self):
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())


class AnchorGenerator(nn.Module):
    """Computes the anchors of every image for a list of feature maps.

    Arguments:
        sizes (tuple): anchor sizes (sqrt of area, pixels). With one stride, all sizes are used
            on that one feature map; with several strides (FPN), one size (or a tuple of sizes)
            per stride.
        aspect_ratios (tuple[float]): height / width ratios.
        anchor_strides (tuple[int]): stride in pixels of each feature map.
        straddle_thresh (float): anchors reaching more than this many pixels outside the
            unpadded image get visibility False; a negative value marks all visible.
    """

    def __init__(
        self,
        sizes=(128, 256, 512),
        aspect_ratios=(0.5, 1.0, 2.0),
        anchor_strides=(8, 16, 32),
        straddle_thresh=0,
    ):
        super(AnchorGenerator, self).__init__()
        if len(anchor_strides) == 1:
            cell_anchors = [generate_anchors(anchor_strides[0], sizes, aspect_ratios).float()]
        else:
            if len(anchor_strides) != len(sizes):
                raise RuntimeError(
                    "FPN should have #anchor_strides == #sizes, got strides {} and sizes {}; "
                    "set MODEL.RPN.ANCHOR_STRIDE and ANCHOR_SIZES to the same length".format(
                        anchor_strides, sizes
                    )
                )
            cell_anchors = [
                generate_anchors(
                    stride, size if isinstance(size, (tuple, list)) else (size,), aspect_ratios
                ).float()
                for stride, size in zip(anchor_strides, sizes)
            ]
        self.strides = anchor_strides
        self.cell_anchors = BufferList(cell_anchors)
        self.straddle_thresh = straddle_thresh

    def num_anchors_per_location(self):
        """Number of anchors A per feature-map cell, for each feature map."""
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    def grid_anchors(self, grid_sizes):
        """Anchors of each feature map, (H * W * A, 4) xyxy, ordered (y, x, anchor).

        Arguments:
            grid_sizes (list[tuple[int, int]]): (H, W) of each feature map.
        """
        anchors = []
        for (grid_height, grid_width), stride, base_anchors in zip(
            grid_sizes, self.strides, self.cell_anchors
        ):
            device = base_anchors.device
            shifts_x = torch.arange(
                0, grid_width * stride, step=stride, dtype=torch.float32, device=device
            )
            shifts_y = torch.arange(
                0, grid_height * stride, step=stride, dtype=torch.float32, device=device
            )
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def add_visibility_to(self, boxlist):
        """Adds the bool field "visibility": the anchor lies inside the image, give or take
        straddle_thresh pixels (x1, y1 >= -t; x2 < W + t; y2 < H + t)."""
        image_width, image_height = boxlist.size
        anchors = boxlist.bbox
        if self.straddle_thresh >= 0:
            inds_inside = (
                (anchors[..., 0] >= -self.straddle_thresh)
                & (anchors[..., 1] >= -self.straddle_thresh)
                & (anchors[..., 2] < image_width + self.straddle_thresh)
                & (anchors[..., 3] < image_height + self.straddle_thresh)
            )
        else:
            inds_inside = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        boxlist.add_field("visibility", inds_inside)

    def forward(self, image_list, feature_maps):
        """
        Arguments:
            image_list (ImageList): padded batch; its image_sizes (height, width) give the
                unpadded size used for visibility.
            feature_maps (list[Tensor]): (N, C, H_l, W_l) per level.

        Returns:
            list[list[BoxList]]: anchors[image][level], each a BoxList of size
            (image width, image height) with the field "visibility".
        """
        grid_sizes = [feature_map.shape[-2:] for feature_map in feature_maps]
        anchors_over_all_feature_maps = self.grid_anchors(grid_sizes)
        anchors = []
        for image_height, image_width in image_list.image_sizes:
            anchors_in_image = []
            for anchors_per_feature_map in anchors_over_all_feature_maps:
                boxlist = BoxList(anchors_per_feature_map, (image_width, image_height), mode="xyxy")
                self.add_visibility_to(boxlist)
                anchors_in_image.append(boxlist)
            anchors.append(anchors_in_image)
        return anchors


def make_anchor_generator(config):
    """AnchorGenerator from MODEL.RPN: ANCHOR_SIZES, ASPECT_RATIOS, ANCHOR_STRIDE,
    STRADDLE_THRESH; with USE_FPN one stride per size, otherwise a single stride (C4)."""
    anchor_sizes = config.MODEL.RPN.ANCHOR_SIZES
    aspect_ratios = config.MODEL.RPN.ASPECT_RATIOS
    anchor_stride = config.MODEL.RPN.ANCHOR_STRIDE
    straddle_thresh = config.MODEL.RPN.STRADDLE_THRESH

    if config.MODEL.RPN.USE_FPN:
        if len(anchor_stride) != len(anchor_sizes):
            raise ValueError(
                "FPN should have len(ANCHOR_STRIDE) == len(ANCHOR_SIZES), got {} and {}; "
                "give MODEL.RPN.ANCHOR_STRIDE one stride per anchor size".format(
                    anchor_stride, anchor_sizes
                )
            )
    elif len(anchor_stride) != 1:
        raise ValueError(
            "Non-FPN should have a single ANCHOR_STRIDE, got {}; set MODEL.RPN.ANCHOR_STRIDE "
            "to one value (e.g. (16,)) or MODEL.RPN.USE_FPN True".format(anchor_stride)
        )
    return AnchorGenerator(anchor_sizes, aspect_ratios, anchor_stride, straddle_thresh)


# Reference windows, as in Detectron (Girshick) and py-faster-rcnn (Ren, Bell), computed in
# float64 so that the rounding below matches theirs.


def generate_anchors(stride=16, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
    """(len(aspect_ratios) * len(sizes), 4) float64 tensor of xyxy anchors centred on the
    reference window [0, 0, stride - 1, stride - 1], ratio-major (all sizes of the first
    ratio, then the next ratio).

    The window is first reshaped to each ratio (h / w) with widths and heights rounded at
    the stride's scale, then scaled by size / stride, so anchors of ratio != 1 are only
    approximately of area size**2.
    """
    scales = torch.tensor(sizes, dtype=torch.float64) / stride
    ratios = torch.tensor(aspect_ratios, dtype=torch.float64)
    reference = torch.tensor([0, 0, stride - 1, stride - 1], dtype=torch.float64)
    ratio_anchors = _ratio_enum(reference, ratios)
    return torch.cat([_scale_enum(anchor, scales) for anchor in ratio_anchors], dim=0)


def _whctrs(anchor):
    """Width, height, x centre and y centre of an inclusive-pixel xyxy window."""
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    x_ctr = anchor[0] + 0.5 * (w - 1)
    y_ctr = anchor[1] + 0.5 * (h - 1)
    return w, h, x_ctr, y_ctr


def _mkanchors(ws, hs, x_ctr, y_ctr):
    """(K, 4) windows of widths ws and heights hs (K,) around one centre."""
    half_w = 0.5 * (ws - 1)
    half_h = 0.5 * (hs - 1)
    return torch.stack((x_ctr - half_w, y_ctr - half_h, x_ctr + half_w, y_ctr + half_h), dim=1)


def _ratio_enum(anchor, ratios):
    """One window per aspect ratio, of about the same area as ``anchor``."""
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    size_ratios = (w * h) / ratios
    ws = torch.round(torch.sqrt(size_ratios))
    hs = torch.round(ws * ratios)
    return _mkanchors(ws, hs, x_ctr, y_ctr)


def _scale_enum(anchor, scales):
    """One window per scale, ``anchor`` scaled about its centre."""
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    return _mkanchors(w * scales, h * scales, x_ctr, y_ctr)
