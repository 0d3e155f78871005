"""Transforms: upstream's resize rule, normalisation, the config pipeline, and boxes, masks and
pixels staying aligned through resize and flips (checked on rendered fixture images)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data.datasets import COCODataset
from maskrcnn_benchmark.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
    ToTensor,
    build_transforms,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList


# Upstream's Resize rule, worked by hand: shorter side -> size unless the longer side would
# exceed max_size, then size = round(max_size * short / long); the longer side is truncated.
@pytest.mark.parametrize(
    "image_size, min_size, max_size, expected_hw",
    [
        ((640, 480), 800, 1333, (800, 1066)),  # 800 * 640 / 480 = 1066.67
        ((480, 640), 800, 1333, (1066, 800)),
        ((800, 600), 800, 1333, (800, 1066)),
        ((600, 800), 600, 1333, (800, 600)),  # already at the size: unchanged
        ((2000, 500), 800, 1333, (333, 1332)),  # capped: round(333.25) = 333, int(1332) = 1332
        ((1000, 300), 800, 1333, (400, 1333)),  # capped: round(399.9) = 400, int(1333.33)
        ((333, 500), 400, None, (600, 400)),  # no cap: int(600.6) = 600
    ],
)
def test_resize_size_rule(image_size, min_size, max_size, expected_hw):
    assert Resize(min_size, max_size).get_size(image_size) == expected_hw


def test_resize_draws_the_shorter_side_from_min_size():
    random.seed(0)
    resize = Resize((100, 200), None)
    drawn = {min(resize.get_size((400, 300))) for _ in range(50)}
    assert drawn == {100, 200}


def test_resize_scales_image_and_target():
    image = Image.new("RGB", (64, 48))
    target = BoxList(torch.tensor([[4.0, 6.0, 23.0, 15.0]]), image.size)
    resized_image, resized_target = Resize(96, 1000)(image, target)
    assert resized_image.size == (128, 96)
    assert resized_target.size == (128, 96)
    torch.testing.assert_close(resized_target.bbox, torch.tensor([[8.0, 12.0, 46.0, 30.0]]))
    assert Resize(96, 1000)(image).size == (128, 96)  # image only


def _pixel_box(mask):
    """Inclusive [x1, y1, x2, y2] of the True pixels of a (H, W) array."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


@pytest.mark.parametrize("hflip, vflip", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("min_size, max_size", [(96, 1000), (80, 100), (30, 1000)])
def test_boxes_masks_and_pixels_stay_aligned(coco_fixture, hflip, vflip, min_size, max_size):
    transforms = Compose(
        [
            Resize(min_size, max_size),
            RandomHorizontalFlip(hflip),
            RandomVerticalFlip(vflip),
            ToTensor(),
        ]
    )
    dataset = COCODataset(coco_fixture.ann_file, coco_fixture.root, True, transforms)
    for index in range(len(dataset)):
        record = dataset.get_img_info(index)
        image, target, _ = dataset[index]
        height, width = image.shape[1:]
        assert target.size == (width, height)
        # A pixel of slack for the inclusive-box convention and rasterised/bilinear edges, one
        # more for upstream's vertical box flip (no -1), plus the stretch of a pixel by an
        # upscale. Every fixture object moves by more than this when flipped.
        tolerance = max(width / record["width"], height / record["height"], 1.0) + 1.5

        masks = target.get_field("masks").convert("mask").instances.masks.numpy()
        pixels = image.permute(1, 2, 0).numpy()
        assert len(masks) == len(target) > 0
        for box, mask in zip(target.bbox.numpy(), masks):
            np.testing.assert_allclose(_pixel_box(mask), box, atol=tolerance)
            # The object's colour (read inside its mask) covers the box in the image too.
            ys, xs = np.nonzero(mask)
            colour = pixels[int(np.median(ys)), int(np.median(xs))]
            same_colour = np.abs(pixels - colour).max(axis=2) < 0.05
            np.testing.assert_allclose(_pixel_box(same_colour), box, atol=tolerance)


def test_flip_probability():
    image = Image.new("RGB", (8, 4))
    target = BoxList(torch.tensor([[0.0, 0.0, 2.0, 1.0]]), image.size)
    random.seed(0)
    flips = sum(
        RandomHorizontalFlip(0.3)(image, target)[1].bbox[0, 0].item() != 0.0 for _ in range(2000)
    )
    assert 500 < flips < 700  # binomial(2000, 0.3): mean 600, sd 20
    assert RandomVerticalFlip(0.0)(image, target)[1] is target


def test_to_tensor_and_normalize():
    pixels = np.random.RandomState(0).randint(0, 256, size=(4, 5, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    target = object()
    tensor, same_target = ToTensor()(image, target)
    assert same_target is target
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), pixels / 255.0, rtol=1e-6)

    mean, std = [102.9801, 115.9465, 122.7717], [1.0, 2.0, 4.0]
    normalized, _ = Normalize(mean, std, to_bgr255=True)(tensor, target)
    expected = (pixels[..., ::-1].astype(np.float64) - mean) / std
    np.testing.assert_allclose(normalized.permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-4)

    rgb_mean, rgb_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalized = Normalize(rgb_mean, rgb_std, to_bgr255=False)(tensor)
    expected = (pixels / 255.0 - rgb_mean) / rgb_std
    np.testing.assert_allclose(normalized.permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_color_jitter():
    pixels = np.random.RandomState(1).randint(0, 256, size=(6, 7, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    target = BoxList(torch.tensor([[1.0, 1.0, 3.0, 3.0]]), image.size)
    unchanged, same_target = ColorJitter(0.0, 0.0, 0.0, 0.0)(image, target)
    assert same_target is target
    np.testing.assert_array_equal(np.asarray(unchanged), pixels)

    torch.manual_seed(0)
    jittered, same_target = ColorJitter(brightness=0.5)(image, target)
    assert same_target is target
    assert not np.array_equal(np.asarray(jittered), pixels)


@pytest.mark.parametrize("is_train", [True, False])
def test_build_transforms_follows_the_config(is_train):
    config = cfg.clone()
    config.merge_from_list(
        ["INPUT.MIN_SIZE_TRAIN", (40, 50), "INPUT.MAX_SIZE_TRAIN", 90, "INPUT.MIN_SIZE_TEST", 45,
         "INPUT.MAX_SIZE_TEST", 80, "INPUT.VERTICAL_FLIP_PROB_TRAIN", 0.25,
         "INPUT.BRIGHTNESS", 0.1]
    )
    pipeline = build_transforms(config, is_train).transforms
    assert [type(t) for t in pipeline] == [
        ColorJitter, Resize, RandomHorizontalFlip, RandomVerticalFlip, ToTensor, Normalize
    ]
    _, resize, hflip, vflip, _, normalize = pipeline
    if is_train:
        assert tuple(resize.min_size) == (40, 50) and resize.max_size == 90
        assert (hflip.prob, vflip.prob) == (0.5, 0.25)
    else:
        assert tuple(resize.min_size) == (45,) and resize.max_size == 80
        assert (hflip.prob, vflip.prob) == (0.0, 0.0)
    assert normalize.mean == config.INPUT.PIXEL_MEAN and normalize.std == config.INPUT.PIXEL_STD
    assert normalize.to_bgr255 is True


def test_test_pipeline_matches_pil_resize_and_caffe2_normalisation():
    """The test-time pipeline is PIL bilinear resize, then BGR x 255 minus the pixel mean."""
    config = cfg.clone()
    config.merge_from_list(["INPUT.MIN_SIZE_TEST", 30, "INPUT.MAX_SIZE_TEST", 1000])
    pixels = np.random.RandomState(2).randint(0, 256, size=(20, 25, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    target = BoxList(torch.tensor([[2.0, 3.0, 10.0, 12.0]]), image.size)
    output, output_target = build_transforms(config, is_train=False)(image, target)

    height, width = 30, int(30 * 25 / 20)
    reference = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float64)
    expected = reference[..., ::-1] - np.array(config.INPUT.PIXEL_MEAN)
    assert output.shape == (3, height, width)
    np.testing.assert_allclose(output.permute(1, 2, 0).numpy(), expected, atol=1e-3)
    torch.testing.assert_close(
        output_target.bbox, target.bbox * torch.tensor([width / 25, height / 20] * 2)
    )
