"""Small tensor helpers shared by the modeling code."""
import torch


def cat(tensors, dim=0):
    """``torch.cat`` that returns a lone tensor as is, without a copy.

    Arguments:
        tensors (list[Tensor] or tuple[Tensor]): at least one tensor.
        dim (int): dimension to concatenate along.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(
            "cat expects a list or tuple of tensors, got {}".format(type(tensors).__name__)
        )
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
