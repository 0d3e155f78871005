"""Feature Pyramid Network on top of the ResNet body's C2..C5, and its extra P6 level."""
from torch import nn
from torch.nn import functional as F


class FPN(nn.Module):
    """Lateral 1x1 convs ``fpn_inner{i}`` and output 3x3 convs ``fpn_layer{i}`` (upstream names).

    ``forward(x)``: x is the list of body feature maps, finest first, each level half the size
    of the previous one (C2..C5: strides 4..32). The top-down path upsamples by nearest x2
    (``scale_factor=2``, as upstream), so the input image size must be divisible by the coarsest
    stride. Returns a tuple of (N, out_channels, h_i, w_i) maps, finest first, followed by the
    maps of ``top_blocks`` (e.g. P6).
    """

    def __init__(self, in_channels_list, out_channels, conv_block, top_blocks=None):
        """
        Arguments:
            in_channels_list (list[int]): channels of each input feature map, finest first.
            out_channels (int): channels of every FPN output.
            conv_block (callable): ``conv_block(in_channels, out_channels, kernel_size, stride)``
                -> module, e.g. ``make_layers.conv_with_kaiming_uniform(use_gn, use_relu)``.
            top_blocks (nn.Module or None): called on the coarsest FPN output; the maps it
                returns (a list) are appended to the outputs.
        """
        super().__init__()
        self.inner_blocks = []
        self.layer_blocks = []
        for idx, in_channels in enumerate(in_channels_list, 1):
            inner_block = "fpn_inner{}".format(idx)
            layer_block = "fpn_layer{}".format(idx)
            self.add_module(inner_block, conv_block(in_channels, out_channels, 1))
            self.add_module(layer_block, conv_block(out_channels, out_channels, 3, 1))
            self.inner_blocks.append(inner_block)
            self.layer_blocks.append(layer_block)
        self.top_blocks = top_blocks

    def forward(self, x):
        if len(x) != len(self.inner_blocks):
            raise ValueError(f"FPN expects {len(self.inner_blocks)} feature maps, got {len(x)}")
        last_inner = getattr(self, self.inner_blocks[-1])(x[-1])
        results = [getattr(self, self.layer_blocks[-1])(last_inner)]
        for feature, inner_block, layer_block in zip(
            x[:-1][::-1], self.inner_blocks[:-1][::-1], self.layer_blocks[:-1][::-1]
        ):
            inner_lateral = getattr(self, inner_block)(feature)
            inner_top_down = F.interpolate(last_inner, scale_factor=2, mode="nearest")
            if inner_top_down.shape[-2:] != inner_lateral.shape[-2:]:
                raise ValueError(
                    f"FPN: a {tuple(feature.shape[-2:])} feature map cannot take the x2 upsampled "
                    f"{tuple(last_inner.shape[-2:])} map above it; the input image size must be "
                    "divisible by the coarsest feature stride (32 for ResNet-FPN): set "
                    "DATALOADER.SIZE_DIVISIBILITY to 32"
                )
            last_inner = inner_lateral + inner_top_down
            results.insert(0, getattr(self, layer_block)(last_inner))

        if self.top_blocks is not None:
            results.extend(self.top_blocks(results[-1]))
        return tuple(results)


class LastLevelMaxPool(nn.Module):
    """P6 from P5 by ``max_pool2d(kernel_size=1, stride=2)``, i.e. every other pixel.

    (N, C, H, W) -> [(N, C, ceil(H / 2), ceil(W / 2))]
    """

    def forward(self, x):
        return [F.max_pool2d(x, 1, 2, 0)]
