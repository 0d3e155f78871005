"""to_image_list: zero padding, size divisibility and (height, width) image sizes."""
import pytest
import torch

from maskrcnn_benchmark.structures.image_list import ImageList, to_image_list


def images():
    generator = torch.Generator().manual_seed(0)
    return [
        torch.rand(3, 20, 35, generator=generator) + 1,
        torch.rand(3, 41, 17, generator=generator) + 1,
    ]


def test_pads_to_the_largest_image_with_zeros():
    imgs = images()
    batch = to_image_list(imgs)
    assert batch.tensors.shape == (2, 3, 41, 35)
    assert batch.image_sizes == [(20, 35), (41, 17)]
    for img, padded in zip(imgs, batch.tensors):
        _, h, w = img.shape
        assert torch.equal(padded[:, :h, :w], img)
        assert not padded[:, h:, :].any() and not padded[:, :, w:].any()


@pytest.mark.parametrize("divisor, expected_hw", [(32, (64, 64)), (8, (48, 40)), (1, (41, 35))])
def test_size_divisible_rounds_the_padded_size_up(divisor, expected_hw):
    batch = to_image_list(images(), size_divisible=divisor)
    assert tuple(batch.tensors.shape[-2:]) == expected_hw
    assert batch.image_sizes == [(20, 35), (41, 17)]


def test_single_tensor_inputs():
    img = images()[0]
    single = to_image_list(img)
    assert single.tensors.shape == (1, 3, 20, 35) and single.image_sizes == [(20, 35)]

    padded = to_image_list(img, size_divisible=32)
    assert padded.tensors.shape == (1, 3, 32, 64)
    assert torch.equal(padded.tensors[0, :, :20, :35], img)

    batch4d = to_image_list(torch.ones(2, 3, 20, 35), size_divisible=16)
    assert batch4d.tensors.shape == (2, 3, 32, 48)
    assert batch4d.image_sizes == [(20, 35), (20, 35)]


def test_image_list_passes_through_and_moves():
    batch = to_image_list(images())
    assert to_image_list(batch) is batch
    moved = batch.to(dtype=torch.float64)
    assert isinstance(moved, ImageList)
    assert moved.tensors.dtype == torch.float64
    assert moved.image_sizes == batch.image_sizes


@pytest.mark.parametrize("bad", [[], [torch.zeros(20, 20)], torch.zeros(20, 20), "image"])
def test_bad_input_raises(bad):
    with pytest.raises((ValueError, TypeError)):
        to_image_list(bad)
