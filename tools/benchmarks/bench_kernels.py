"""Times the kernels of maskrcnn_benchmark._C against torchvision.ops on detection-sized inputs.

    python tools/benchmarks/bench_kernels.py [--device cpu|cuda] [--threads N] [--repeats R]

ROIAlign (Detectron v1 = torchvision roi_align(aligned=False)) runs on a 256-channel stride-4 FPN level of an
800 x 1088 image (200 x 272 features); NMS on RPN-like proposals at IoU 0.7 (torchvision gets the boxes with +1 on
x2, y2, which reproduces the +1 convention). Every case first checks that both implementations agree, then reports
the median wall time of --repeats runs after one warm-up run, and the ratio torchvision / ours (> 1: ours is faster).
With ``--device cuda`` the inputs live on the GPU and every timed run ends with torch.cuda.synchronize().
"""
import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch
import torchvision
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align

from maskrcnn_benchmark.layers import nms, roi_align

IMAGE_HEIGHT, IMAGE_WIDTH = 800, 1088
SPATIAL_SCALE = 0.25
CHANNELS = 256


def proposal_boxes(num_boxes, generator, num_objects=40, min_size=32.0, max_size=512.0):
    """(num_boxes, 4) RPN-like boxes: 70% jittered around a few objects, 30% anywhere; sides log-uniform."""
    def uniform(*shape, low=0.0, high=1.0):
        return torch.rand(*shape, generator=generator) * (high - low) + low

    log_sizes = uniform(num_objects, 2, low=math.log(min_size), high=math.log(max_size))
    objects_size = log_sizes.exp()
    objects_center = uniform(num_objects, 2) * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT])
    owner = torch.randint(num_objects, (num_boxes,), generator=generator)
    size = objects_size[owner] * uniform(num_boxes, 2, low=0.7, high=1.4)
    center = objects_center[owner] + objects_size[owner] * uniform(num_boxes, 2, low=-0.3, high=0.3)
    background = torch.rand(num_boxes, generator=generator) < 0.3
    size[background] = uniform(int(background.sum()), 2, low=math.log(min_size), high=math.log(max_size)).exp()
    center[background] = uniform(int(background.sum()), 2) * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT])
    boxes = torch.cat([center - size / 2, center + size / 2], dim=1)
    limits = torch.tensor([IMAGE_WIDTH - 1, IMAGE_HEIGHT - 1] * 2, dtype=boxes.dtype)
    return torch.minimum(boxes.clamp(min=0), limits)


def rois_for_images(rois_per_image, num_images, generator):
    """(num_images * rois_per_image, 5) RoIs [batch_index, x1, y1, x2, y2] in image pixels."""
    rows = []
    for image in range(num_images):
        boxes = proposal_boxes(rois_per_image, generator)
        rows.append(torch.cat([torch.full((rois_per_image, 1), float(image)), boxes], dim=1))
    return torch.cat(rows)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, repeats, device):
    """Median wall time of ``repeats`` calls of fn after one warm-up call, in milliseconds."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def roi_align_cases(repeats, generator, device):
    cases = [
        ("box head, 1 image x 1,000 RoIs, 7x7", 1, 1000, 7),
        ("box head, 2 images x 512 RoIs, 7x7", 2, 512, 7),
        ("mask head, 2 images x 128 RoIs, 14x14", 2, 128, 14),
    ]
    for name, num_images, rois_per_image, size in cases:
        features = torch.randn(num_images, CHANNELS, IMAGE_HEIGHT // 4, IMAGE_WIDTH // 4, generator=generator)
        rois = rois_for_images(rois_per_image, num_images, generator).to(device)
        grad = torch.randn(len(rois), CHANNELS, size, size, generator=generator).to(device)
        features = features.to(device)
        ours_input = features.clone().requires_grad_()
        ref_input = features.clone().requires_grad_()

        def ours_forward():
            return roi_align(ours_input, rois, (size, size), SPATIAL_SCALE, 2)

        def ref_forward():
            return tv_roi_align(ref_input, rois, (size, size), SPATIAL_SCALE, 2, aligned=False)

        def ours_train():
            ours_input.grad = None
            ours_forward().backward(grad)

        def ref_train():
            ref_input.grad = None
            ref_forward().backward(grad)

        torch.testing.assert_close(ours_forward(), ref_forward(), atol=1e-5, rtol=0)
        ours_train()
        ref_train()
        torch.testing.assert_close(ours_input.grad, ref_input.grad, atol=1e-4, rtol=1e-5)
        with torch.no_grad():
            forward_times = median_ms(ours_forward, repeats, device), median_ms(ref_forward, repeats, device)
        yield f"ROIAlign forward, {name}", *forward_times
        train_times = median_ms(ours_train, repeats, device), median_ms(ref_train, repeats, device)
        yield f"ROIAlign forward+backward, {name}", *train_times


def nms_cases(repeats, generator, device):
    for num_boxes in (2000, 12000):
        boxes = proposal_boxes(num_boxes, generator).to(device)
        scores = torch.rand(num_boxes, generator=generator).to(device)
        shifted = boxes.clone()
        shifted[:, 2:] += 1
        ours_keep = nms(boxes, scores, 0.7)
        ref_keep = tv_nms(shifted, scores, 0.7).sort().values
        assert torch.equal(ours_keep, ref_keep), "NMS disagrees with torchvision"
        name = f"NMS, {num_boxes:,} RPN-like boxes, IoU 0.7 (keeps {len(ours_keep):,})"
        yield name, median_ms(lambda: nms(boxes, scores, 0.7), repeats, device), median_ms(
            lambda: tv_nms(shifted, scores, 0.7), repeats, device
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU is available; run with --device cpu")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads {torch.get_num_threads()}"

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}; {where}; float32; "
        f"median of {args.repeats} runs after 1 warm-up"
    )
    print()
    print("| case | ours (ms) | torchvision (ms) | torchvision / ours |")
    print("|---|---:|---:|---:|")
    for cases in (roi_align_cases, nms_cases):
        for name, ours, ref in cases(args.repeats, generator, device):
            print(f"| {name} | {ours:.1f} | {ref:.1f} | {ref / ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
