"""Speed of the post-processing steps that LVIS inference waits on, each against the reference
it replaces, in one run:

* mask pasting: R-50-FPN inference (random weights, score threshold 0 so that every image has 100
  detections and runs the mask head on them, masks pasted inside the model as bench_model.py
  does) with MODEL.ROI_MASK_HEAD.PASTE_MODE "batched" against "masker" (upstream's Masker, one
  mask at a time on the CPU), on the same model and image; and the pasting of those detections'
  masks alone. The pixel agreement of the two pastes is printed too.
* per-class NMS: the box post-processor alone (softmax, decoding, score threshold 0.0 as in the
  LST phases, NMS 0.5, 100 detections) on 1,000 proposals at 65, 431 and 1,231 classes, with the
  batched NMS (one _C.batched_nms call, the default) against upstream's loop over the classes.
* class-specific mask logits: the mask predictor (MaskRCNNC4Predictor) and post-processor on the
  detections' mask-head features, computing only each detection's own class channel (the
  predictor given the labels, the default) against all NUM_CLASSES channels, then picking one
  (upstream); at the synthetic benchmark's Fixed AP evaluation (2,400 detections of a batch of 8
  images, 64 channels, 65 classes) and at one LVIS image (300 detections, 256 channels, 1,231
  classes). The largest difference of the two masks' probabilities is printed too.

Prints markdown tables of median wall-clock seconds over ``--repeats`` runs after ``--warmup``
(the two variants alternate) and new / reference of the medians.

    python tools/benchmarks/bench_postprocess.py [--device cpu|cuda] [--parts paste nms mask]
        [--size 800x1067] [--classes 65 431 1231] [--repeats 3] [--warmup 1] [--threads 1]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import benchmark_device, build_ours, make_inputs, parse_size  # noqa: E402

from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import PostProcessor  # noqa: E402
from maskrcnn_benchmark.config import cfg as default_cfg  # noqa: E402
from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import (  # noqa: E402
    BatchedMasker,
    Masker,
    MaskPostProcessor,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.roi_mask_predictors import MaskRCNNC4Predictor  # noqa: E402
from maskrcnn_benchmark.structures.bounding_box import BoxList  # noqa: E402
from maskrcnn_benchmark.structures.boxlist_ops import boxlist_nms, cat_boxlist  # noqa: E402


class ClassLoopPostProcessor(PostProcessor):
    """The reference: upstream's filter_results, one score threshold and NMS per class in Python."""

    def filter_results(self, boxlist, num_classes):
        boxes = boxlist.bbox.reshape(-1, num_classes * 4)
        scores = boxlist.get_field("scores").reshape(-1, num_classes)
        result = []
        inds_all = scores > self.score_thresh
        for j in range(1, num_classes):
            inds = inds_all[:, j].nonzero().squeeze(1)
            boxlist_for_class = BoxList(boxes[inds, j * 4 : (j + 1) * 4], boxlist.size, mode="xyxy")
            boxlist_for_class.add_field("scores", scores[inds, j])
            boxlist_for_class = boxlist_nms(boxlist_for_class, self.nms)
            labels = torch.full((len(boxlist_for_class),), j, dtype=torch.int64, device=scores.device)
            boxlist_for_class.add_field("labels", labels)
            result.append(boxlist_for_class)
        result = cat_boxlist(result)
        if len(result) > self.detections_per_img > 0:
            cls_scores = result.get_field("scores")
            image_thresh, _ = torch.kthvalue(cls_scores.cpu(), len(result) - self.detections_per_img + 1)
            result = result[torch.nonzero(cls_scores >= image_thresh.item()).squeeze(1)]
        return result


def median_seconds(functions, warmup, repeats, device):
    """Median wall-clock seconds of each function, run alternately after the warm-up runs."""
    times = [[] for _ in functions]
    for run in range(warmup + repeats):
        for fn, log in zip(functions, times):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if run >= warmup:
                log.append(time.perf_counter() - start)
    return [statistics.median(log) for log in times]


def bench_paste(args, device):
    height, width = args.size
    model = build_ours(device).eval()
    images = make_inputs(height, width, device)[0][0]
    mask_head = model.roi_heads.mask
    pasters = {"masker": Masker(threshold=0.5, padding=1), "batched": BatchedMasker(threshold=0.5, padding=1)}

    def infer(mode):
        mask_head.post_processor.masker = pasters[mode]
        with torch.no_grad():
            return model(images)[0]

    mask_head.post_processor.masker = None
    with torch.no_grad():
        detections = model(images)[0]  # (D, 1, M, M) mask probabilities
    probabilities = detections.get_field("mask")
    pasted = {mode: paster([probabilities], [detections])[0].cpu() for mode, paster in pasters.items()}
    agreement = (pasted["batched"] == pasted["masker"]).flatten(1).float().mean(dim=1)

    inference = median_seconds([lambda: infer("batched"), lambda: infer("masker")], args.warmup, args.repeats, device)
    paste_only = median_seconds(
        [lambda: pasters[mode]([probabilities], [detections]) for mode in ("batched", "masker")],
        args.warmup, args.repeats, device)
    print("\nMask pasting, {}x{} image, {} detections; pixel agreement batched vs Masker: min {:.6f} per "
          "mask, {} of {} pixels differ".format(height, width, len(detections), agreement.min().item(),
                                                int((pasted["batched"] != pasted["masker"]).sum()),
                                                pasted["masker"].numel()))
    print("| step | batched (s/img) | Masker (s/img) | batched / Masker |")
    print("|---|---:|---:|---:|")
    for step, (batched, masker) in (("R-50-FPN inference", inference), ("pasting alone", paste_only)):
        print("| {} | {:.3f} | {:.3f} | {:.2f} |".format(step, batched, masker, batched / masker), flush=True)


def post_processor_inputs(num_classes, num_proposals, height, width, device):
    """Random class logits, box deltas and proposals (boxes of 8-400 pixels in the image)."""
    generator = torch.Generator().manual_seed(0)
    sides = 8 + 392 * torch.rand(num_proposals, 2, generator=generator)
    corners = torch.rand(num_proposals, 2, generator=generator) * (torch.tensor([width, height]) - sides)
    proposals = BoxList(torch.cat([corners, corners + sides], dim=1), (width, height), mode="xyxy")
    logits = torch.randn(num_proposals, num_classes, generator=generator)
    deltas = 0.5 * torch.randn(num_proposals, 4 * num_classes, generator=generator)
    return (logits.to(device), deltas.to(device)), [proposals.to(device)]


def bench_nms(args, device):
    height, width = args.size
    batched, loop = PostProcessor(score_thresh=0.0), ClassLoopPostProcessor(score_thresh=0.0)
    print("\nBox post-processor, {} proposals, SCORE_THRESH 0.0, NMS 0.5, 100 detections, {}x{} image"
          .format(args.proposals, height, width))
    print("| classes | batched NMS (s/img) | per-class loop (s/img) | batched / loop | same detections |")
    print("|---:|---:|---:|---:|---|")
    for num_classes in args.classes:
        x, proposals = post_processor_inputs(num_classes, args.proposals, height, width, device)
        with torch.no_grad():
            a, b = batched(x, proposals)[0], loop(x, proposals)[0]
            same = torch.equal(a.bbox, b.bbox) and torch.equal(a.get_field("labels"), b.get_field("labels"))
            new, reference = median_seconds([lambda: batched(x, proposals), lambda: loop(x, proposals)],
                                            args.warmup, args.repeats, device)
        print("| {} | {:.4f} | {:.4f} | {:.3f} | {} |".format(
            num_classes, new, reference, new / reference, "yes" if same else "NO"), flush=True)


MASK_CASES = (  # (name, detections, mask-head channels, classes with background)
    ("synthetic Fixed AP batch", 2400, 64, 65),
    ("LVIS image", 300, 256, 1231),
)


def bench_mask_logits(args, device):
    print("\nMask predictor + post-processor (14x14 features to 28x28 masks, no pasting)")
    print("| case | detections | channels | classes | own class (s) | all classes (s) | own / all | max prob diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    post_processor = MaskPostProcessor()
    for name, detections, channels, num_classes in MASK_CASES:
        cfg = default_cfg.clone()
        cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes,
                             "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (channels,) * 4])
        generator = torch.Generator().manual_seed(0)
        predictor = MaskRCNNC4Predictor(cfg, channels).to(device).eval()
        features = torch.rand(detections, channels, 14, 14, generator=generator).to(device)
        boxes = BoxList(torch.tensor([[10.0, 10.0, 60.0, 50.0]]).repeat(detections, 1), (200, 200)).to(device)
        boxes.add_field("labels", torch.randint(1, num_classes, (detections,), generator=generator).to(device))
        labels = boxes.get_field("labels")

        def own_class():
            return post_processor(predictor(features, labels=labels), [boxes])[0].get_field("mask")

        def all_classes():
            return post_processor(predictor(features), [boxes])[0].get_field("mask")

        with torch.no_grad():
            difference = (own_class() - all_classes()).abs().max().item()
            own, reference = median_seconds([own_class, all_classes], args.warmup, args.repeats, device)
        print("| {} | {} | {} | {} | {:.3f} | {:.3f} | {:.2f} | {:.1e} |".format(
            name, detections, channels, num_classes, own, reference, own / reference, difference), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--parts", nargs="+", choices=("paste", "nms", "mask"), default=["paste", "nms", "mask"])
    parser.add_argument("--size", type=parse_size, default=(800, 1067), help="image size as HEIGHTxWIDTH")
    parser.add_argument("--classes", nargs="+", type=int, default=[65, 431, 1231],
                        help="class counts, background included, of the NMS part")
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    device = benchmark_device(args.device, args.threads)
    print("torch {}, {} threads, {} {}{}".format(
        torch.__version__, torch.get_num_threads(), platform.machine(), platform.processor() or "",
        ", " + torch.cuda.get_device_name(device) if device.type == "cuda" else ""))
    if "paste" in args.parts:
        bench_paste(args, device)
    if "nms" in args.parts:
        bench_nms(args, device)
    if "mask" in args.parts:
        bench_mask_logits(args, device)


if __name__ == "__main__":
    main()
