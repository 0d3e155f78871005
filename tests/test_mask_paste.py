"""Batched mask pasting (BatchedMasker / paste_masks_in_image) against upstream's Masker, which pastes
one mask at a time, on random masks and boxes, many of them leaving the image."""
import pytest
import torch

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import (
    BatchedMasker,
    Masker,
    make_masker,
    make_roi_mask_post_processor,
    paste_masks_in_image,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _random_detections(seed, num=60, resolution=28):
    """(num, 1, M, M) probabilities and a BoxList: boxes from sub-pixel to most of the image, centred
    up to 20% outside it (so many are cut by the border and some lie wholly outside)."""
    generator = torch.Generator().manual_seed(seed)
    width, height = (int(v) for v in torch.randint(40, 260, (2,), generator=generator))
    size = torch.tensor([width, height], dtype=torch.float32)
    masks = torch.rand(num, 1, resolution, resolution, generator=generator)
    centres = (torch.rand(num, 2, generator=generator) * 1.4 - 0.2) * size
    sides = torch.rand(num, 2, generator=generator) ** 2 * 0.9 * size
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    return masks, BoxList(boxes, (width, height), mode="xyxy")


@pytest.mark.parametrize("seed", range(8))
def test_batched_paste_agrees_with_masker(seed):
    masks, boxes = _random_detections(seed)
    expected = Masker(threshold=0.5, padding=1)([masks], [boxes])[0]
    pasted = BatchedMasker(threshold=0.5, padding=1)([masks], [boxes])[0]
    assert pasted.shape == expected.shape and pasted.dtype == expected.dtype == torch.bool
    agreement = (pasted == expected).flatten(1).float().mean(dim=1)
    assert agreement.min().item() >= 0.999
    # A pixel may differ only where the resized probability is within float rounding of the threshold.
    probabilities = Masker(threshold=-1, padding=1)([masks], [boxes])[0]
    assert ((probabilities[pasted != expected] - 0.5).abs() < 1e-5).all()
    assert expected.flatten(1).any(dim=1).sum() > len(masks) // 2  # most masks are (partly) inside


@pytest.mark.parametrize("seed", range(4))
def test_batched_paste_keeps_masker_probabilities(seed):
    masks, boxes = _random_detections(seed)
    expected = Masker(threshold=-1, padding=1)([masks], [boxes])[0]
    pasted = BatchedMasker(threshold=-1, padding=1)([masks], [boxes])[0]
    assert pasted.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_integer_aligned_masks_paste_identically(seed):
    """Integer boxes of the mask's own size (no padding): every mask pixel lands on one image pixel."""
    generator = torch.Generator().manual_seed(seed)
    resolution, width, height = 28, 100, 80
    masks = torch.rand(50, 1, resolution, resolution, generator=generator)
    corners = torch.stack([torch.randint(-20, width, (50,), generator=generator),
                           torch.randint(-20, height, (50,), generator=generator)], dim=1).float()
    boxes = BoxList(torch.cat([corners, corners + resolution - 1], dim=1), (width, height), mode="xyxy")
    for threshold in (0.5, -1):
        expected = Masker(threshold=threshold, padding=0)([masks], [boxes])[0]
        assert torch.equal(BatchedMasker(threshold=threshold, padding=0)([masks], [boxes])[0], expected)


def test_batched_paste_in_small_chunks_equals_one_chunk():
    masks, boxes = _random_detections(0)
    width, height = boxes.size
    whole = paste_masks_in_image(masks[:, 0], boxes.bbox, height, width)
    assert torch.equal(paste_masks_in_image(masks[:, 0], boxes.bbox, height, width, chunk_elements=500), whole)


def test_no_detections():
    boxes = BoxList(torch.zeros(0, 4), (30, 20), mode="xyxy")
    pasted = BatchedMasker()([torch.zeros(0, 1, 28, 28)], [boxes])[0]
    assert pasted.shape == (0, 1, 20, 30) and pasted.dtype == torch.bool


@needs_cuda
def test_batched_paste_on_cuda_agrees_with_masker():
    masks, boxes = _random_detections(0)
    expected = Masker(threshold=0.5, padding=1)([masks], [boxes])[0]
    pasted = BatchedMasker(threshold=0.5, padding=1)([masks.cuda()], [boxes.to("cuda")])[0]
    assert pasted.is_cuda
    agreement = (pasted.cpu() == expected).flatten(1).float().mean(dim=1)
    assert agreement.min().item() >= 0.999


@pytest.mark.parametrize(
    "mode, device, expected",
    [("auto", "cpu", Masker), ("auto", "cuda", BatchedMasker), ("auto", "cuda:1", BatchedMasker),
     ("masker", "cuda", Masker), ("batched", "cpu", BatchedMasker)],
)
def test_paste_mode_selects_the_paster(mode, device, expected):
    assert type(make_masker(mode, device)) is expected


def test_post_processor_follows_paste_mode():
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = True
    cfg.MODEL.ROI_MASK_HEAD.PASTE_MODE = "batched"
    assert type(make_roi_mask_post_processor(cfg).masker) is BatchedMasker
    cfg.MODEL.ROI_MASK_HEAD.PASTE_MODE = "loop"
    with pytest.raises(ValueError, match="MODEL.ROI_MASK_HEAD.PASTE_MODE is 'loop'; use one of auto, masker"):
        make_roi_mask_post_processor(cfg)
