"""Multi-level RoI pooling: assigns each box to an FPN level and ROIAligns it there."""
import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from maskrcnn_benchmark.layers import ROIAlign

from .utils import cat


class LevelMapper(object):
    """Chooses the FPN level of each box by Eqn. (1) of the FPN paper:
    k = floor(canonical_level + log2(sqrt(area) / canonical_scale + eps)), clamped to
    [k_min, k_max], with the area measured with +1 widths (``BoxList.area``).

    Arguments:
        k_min, k_max (int): finest and coarsest levels (2 and 5 for P2-P5).
        canonical_scale (int): box size that maps to canonical_level (224, ImageNet).
        canonical_level (int)
        eps (float): added inside the log2, as upstream.
    """

    def __init__(self, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.eps = eps

    def __call__(self, boxlists):
        """
        Arguments:
            boxlists (list[BoxList]): boxes of each image.

        Returns:
            (R,) int64 tensor of level indices counted from k_min (0 = finest), for the
            boxes of all images concatenated.
        """
        s = torch.sqrt(cat([boxlist.area() for boxlist in boxlists]))
        target_lvls = torch.floor(self.lvl0 + torch.log2(s / self.s0 + self.eps))
        target_lvls = torch.clamp(target_lvls, min=self.k_min, max=self.k_max)
        return target_lvls.to(torch.int64) - self.k_min


class Pooler(nn.Module):
    """ROIAlign over one feature map, or over several FPN levels with LevelMapper.

    Arguments:
        output_size (int or tuple[int, int]): pooled (height, width).
        scales (list[float]): spatial scale of each feature map (1/4, 1/8, ... for P2, P3, ...),
            finest first; consecutive levels must differ by a factor 2.
        sampling_ratio (int): ROIAlign samples per bin side (0 = adaptive).
    """

    def __init__(self, output_size, scales, sampling_ratio):
        super(Pooler, self).__init__()
        self.output_size = _pair(output_size)
        self.poolers = nn.ModuleList(
            ROIAlign(self.output_size, spatial_scale=scale, sampling_ratio=sampling_ratio)
            for scale in scales
        )
        # Level k has stride 2**k, so its scale is 2**-k.
        lvl_min = int(round(-math.log2(scales[0])))
        lvl_max = int(round(-math.log2(scales[-1])))
        self.map_levels = LevelMapper(lvl_min, lvl_max)

    def convert_to_roi_format(self, boxes):
        """(R, 5) tensor of [image index, x1, y1, x2, y2] rows for the boxes of all images.

        Arguments:
            boxes (list[BoxList]): xyxy boxes of each image.
        """
        concat_boxes = cat([b.bbox for b in boxes], dim=0)
        device, dtype = concat_boxes.device, concat_boxes.dtype
        ids = cat(
            [torch.full((len(b), 1), i, dtype=dtype, device=device) for i, b in enumerate(boxes)],
            dim=0,
        )
        return torch.cat([ids, concat_boxes], dim=1)

    def forward(self, x, boxes):
        """
        Arguments:
            x (list[Tensor]): (N, C, H_l, W_l) feature map of each level, finest first;
                maps beyond the pooler's scales (FPN's P6) are ignored.
            boxes (list[BoxList]): N BoxLists in xyxy mode, in input-image pixels.

        Returns:
            (R, C, output_height, output_width) pooled features, R = total number of boxes,
            in the order of ``boxes``.
        """
        num_levels = len(self.poolers)
        if len(x) < num_levels:
            raise ValueError(
                "Pooler was built for {} feature maps (POOLER_SCALES) but got {}; "
                "POOLER_SCALES should list the scales of the first feature maps".format(
                    num_levels, len(x)
                )
            )
        rois = self.convert_to_roi_format(boxes)
        if num_levels == 1:
            return self.poolers[0](x[0], rois)

        levels = self.map_levels(boxes)
        num_channels = x[0].shape[1]
        dtype, device = x[0].dtype, x[0].device
        result = torch.zeros(
            (len(rois), num_channels) + self.output_size, dtype=dtype, device=device
        )
        for level, (per_level_feature, pooler) in enumerate(zip(x, self.poolers)):
            idx_in_level = torch.nonzero(levels == level).squeeze(1)
            if idx_in_level.numel() == 0:
                continue
            result[idx_in_level] = pooler(per_level_feature, rois[idx_in_level]).to(dtype)
        return result


def make_pooler(cfg, head_name):
    """Pooler from cfg.MODEL[head_name] (e.g. "ROI_BOX_HEAD"): POOLER_RESOLUTION,
    POOLER_SCALES and POOLER_SAMPLING_RATIO."""
    head_cfg = cfg.MODEL[head_name]
    resolution = head_cfg.POOLER_RESOLUTION
    return Pooler(
        output_size=(resolution, resolution),
        scales=head_cfg.POOLER_SCALES,
        sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
    )
