"""Layer factories shared by the backbone and the RoI heads, with Caffe2/Detectron initialisations.

``group_norm`` reads ``MODEL.GROUP_NORM`` from the *global* config
(``maskrcnn_benchmark.config.cfg``), as upstream does: the GroupNorm settings of an experiment
take effect when its YAML is merged into that global tree, as upstream's ``tools/train_net.py``
does.
"""
from torch import nn

from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.layers.misc import Conv2d


def get_group_gn(dim, dim_per_gp, num_groups):
    """Number of GroupNorm groups for ``dim`` channels.

    Exactly one of ``dim_per_gp`` (channels per group) and ``num_groups`` must be -1; the other
    must divide ``dim``.
    """
    if (dim_per_gp == -1) == (num_groups == -1):
        raise ValueError(
            f"GroupNorm: set exactly one of MODEL.GROUP_NORM.DIM_PER_GP ({dim_per_gp}) and "
            f"MODEL.GROUP_NORM.NUM_GROUPS ({num_groups}) to -1"
        )
    if dim_per_gp > 0:
        if dim % dim_per_gp != 0:
            raise ValueError(
                f"GroupNorm: {dim} channels cannot be split into groups of "
                f"MODEL.GROUP_NORM.DIM_PER_GP={dim_per_gp} channels"
            )
        return dim // dim_per_gp
    if dim % num_groups != 0:
        raise ValueError(
            f"GroupNorm: {dim} channels cannot be split into MODEL.GROUP_NORM.NUM_GROUPS="
            f"{num_groups} groups; choose a divisor of {dim}"
        )
    return num_groups


def group_norm(out_channels, affine=True, divisor=1):
    """``nn.GroupNorm`` over ``out_channels // divisor`` channels, configured by MODEL.GROUP_NORM."""
    out_channels = out_channels // divisor
    dim_per_gp = cfg.MODEL.GROUP_NORM.DIM_PER_GP // divisor
    num_groups = cfg.MODEL.GROUP_NORM.NUM_GROUPS // divisor
    return nn.GroupNorm(
        get_group_gn(out_channels, dim_per_gp, num_groups),
        out_channels,
        eps=cfg.MODEL.GROUP_NORM.EPSILON,
        affine=affine,
    )


def make_conv3x3(
    in_channels, out_channels, dilation=1, stride=1, use_gn=False, use_relu=False, kaiming_init=True
):
    """3x3 conv (padding = dilation, so stride 1 keeps the size), optionally + GroupNorm + ReLU.

    Weights: Kaiming normal (fan_out, relu) or, with ``kaiming_init=False``, N(0, 0.01).
    The conv has a zero bias unless GroupNorm follows it.
    """
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=not use_gn,
    )
    if kaiming_init:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    else:
        nn.init.normal_(conv.weight, std=0.01)
    if not use_gn:
        nn.init.constant_(conv.bias, 0)
    return _with_norm_and_relu(conv, out_channels, use_gn, use_relu)


def make_fc(dim_in, hidden_dim, use_gn=False):
    """Linear layer ``dim_in -> hidden_dim`` with Caffe2's XavierFill (= kaiming_uniform_, a=1).

    With ``use_gn`` the layer has no bias and is followed by GroupNorm.
    """
    if use_gn:
        fc = nn.Linear(dim_in, hidden_dim, bias=False)
        nn.init.kaiming_uniform_(fc.weight, a=1)
        return nn.Sequential(fc, group_norm(hidden_dim))
    fc = nn.Linear(dim_in, hidden_dim)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.constant_(fc.bias, 0)
    return fc


def conv_with_kaiming_uniform(use_gn=False, use_relu=False):
    """Return ``make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1)``.

    Each conv is "same"-padded (padding = dilation * (kernel_size - 1) // 2) and initialised
    with Caffe2's XavierFill, which is ``kaiming_uniform_(a=1)`` in PyTorch; it has a zero bias
    unless GroupNorm follows it (``use_gn``), and ``use_relu`` appends an in-place ReLU.
    """

    def make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1):
        conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=not use_gn,
        )
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if not use_gn:
            nn.init.constant_(conv.bias, 0)
        return _with_norm_and_relu(conv, out_channels, use_gn, use_relu)

    return make_conv


def _with_norm_and_relu(conv, out_channels, use_gn, use_relu):
    """``conv`` alone, or ``nn.Sequential(conv[, GroupNorm][, ReLU])`` (upstream's key layout)."""
    modules = [conv]
    if use_gn:
        modules.append(group_norm(out_channels))
    if use_relu:
        modules.append(nn.ReLU(inplace=True))
    if len(modules) == 1:
        return conv
    return nn.Sequential(*modules)
