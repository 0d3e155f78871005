"""Speed of Mask R-CNN R-50-FPN against torchvision's maskrcnn_resnet50_fpn, in one run (CPU or GPU).

Both models are randomly initialised and run on the same images with matched settings:

* same architecture: R-50-FPN, 81 classes, FrozenBN with the stem and res2 frozen (torchvision's
  own setup for a pretrained backbone; ``--torchvision-backbone default`` instead trains the
  BatchNorm backbone that maskrcnn_resnet50_fpn(weights=None, weights_backbone=None) builds);
* same input size; torchvision's transform is given min_size = the image height so that it
  does not resize (it still normalises and pads to /32, as our data loader does beforehand);
* proposals: 1000 per image at test time, 2000 per image in training, 512 RoIs per image for
  the box head, 100 detections per image;
* box score threshold 0 for both, so that each returns 100 detections and runs its mask head
  on them, as a trained model does (random weights give no score above the usual 0.05);
* masks pasted into the image by both (ours: MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS True,
  whose default False leaves pasting to the evaluator; torchvision always pastes);
* a train step is forward + backward + SGD step on one image with three polygon objects
  (our mask targets rasterise the polygons, torchvision's ROIAligns the same masks as bitmaps).

Prints a markdown table: median wall-clock seconds per image over ``--repeats`` runs after
``--warmup`` runs (the two models alternate), ours / torchvision of the median wall-clock and
of the median process CPU time (less sensitive to other processes on a shared machine; on a GPU
it is the host's share of the work). With ``--device cuda`` both models, images and targets are
on the GPU, float32, and every timed call ends with torch.cuda.synchronize().

    python tools/benchmarks/bench_model.py [--device cpu|cuda] [--sizes 800x1067 512x683]
        [--repeats 3] [--warmup 1] [--threads N] [--torchvision-backbone frozen|default]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torchvision
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from maskrcnn_benchmark.config import cfg as global_cfg  # noqa: E402
from maskrcnn_benchmark.modeling.detector import build_detection_model  # noqa: E402
from maskrcnn_benchmark.structures.bounding_box import BoxList  # noqa: E402
from maskrcnn_benchmark.structures.image_list import to_image_list  # noqa: E402
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask  # noqa: E402

CONFIG_FILE = os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml")
LEARNING_RATE = 1e-4
# torchvision's GeneralizedRCNNTransform defaults
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


def benchmark_device(device_name, threads):
    """The torch.device to measure on, after setting ``threads`` torch threads (0: torch's
    default) and seeding torch with 0; exits with a message when CUDA is asked for without a GPU."""
    if device_name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU is available; run with --device cpu")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch.device(device_name)


def build_ours(device):
    cfg = global_cfg.clone()
    cfg.merge_from_file(CONFIG_FILE)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", device.type,
            "MODEL.ROI_HEADS.SCORE_THRESH", 0.0,
            "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", True,
            # One image per batch: the per-batch FPN top-n equals torchvision's per-image 2000.
            "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", 2000,
        ]
    )
    return build_detection_model(cfg).to(device)


def build_torchvision(height, backbone):
    """torchvision's Mask R-CNN R-50-FPN with 81 classes and our proposal / detection counts.

    backbone "frozen": what maskrcnn_resnet50_fpn builds around a pretrained backbone
    (FrozenBatchNorm2d, stem and layer1 frozen), i.e. our FREEZE_CONV_BODY_AT 2 with FrozenBN.
    backbone "default": maskrcnn_resnet50_fpn(weights=None, weights_backbone=None) as is
    (BatchNorm2d, every layer trained).
    """
    settings = dict(
        num_classes=81,
        min_size=height,
        max_size=1333,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000,
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=2000,
        box_batch_size_per_image=512,
        box_detections_per_img=100,
    )
    if backbone == "default":
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **settings)
    body = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    return MaskRCNN(body, **settings)


def synthetic_objects(height, width):
    """Three objects: inclusive xyxy boxes, labels and one polygon each, scaled to the image."""
    sx, sy = width / 100.0, height / 100.0
    polygons = [
        [[10 * sx, 10 * sy, 40 * sx, 12 * sy, 35 * sx, 45 * sy, 12 * sx, 40 * sy]],
        [[50 * sx, 20 * sy, 90 * sx, 20 * sy, 90 * sx, 60 * sy, 50 * sx, 60 * sy]],
        [[20 * sx, 60 * sy, 45 * sx, 95 * sy, 5 * sx, 95 * sy]],
    ]
    boxes = []
    for (polygon,) in polygons:
        xs, ys = polygon[0::2], polygon[1::2]
        boxes.append([min(xs), min(ys), max(xs), max(ys)])
    return torch.tensor(boxes), torch.tensor([1, 17, 42]), polygons


def make_inputs(height, width, device):
    """Inputs of the two models: one random image and its targets.

    Both backbones see the same tensor: torchvision normalises the [0, 1] image inside the
    model, ours gets it normalised alike (its data loader would normalise; with random weights
    the BGR x255 scale of the Caffe2 configs blows the activations up).
    """
    generator = torch.Generator().manual_seed(0)
    boxes, labels, polygons = synthetic_objects(height, width)
    masks = SegmentationMask(polygons, (width, height))

    tv_image = torch.rand(3, height, width, generator=generator)
    normalised = (tv_image - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    ours_image = to_image_list([normalised], 32)
    ours_target = BoxList(boxes, (width, height))
    ours_target.add_field("labels", labels)
    ours_target.add_field("masks", masks)
    tv_target = {
        "boxes": boxes + torch.tensor([0.0, 0.0, 1.0, 1.0]),  # exclusive corners
        "labels": labels,
        "masks": masks.get_mask_tensor(),
    }
    tv_target = {key: value.to(device) for key, value in tv_target.items()}
    return (ours_image.to(device), [ours_target.to(device)]), ([tv_image.to(device)], [tv_target])


def train_step(model, optimizer, inputs):
    """One SGD step; returns the total loss."""
    images, targets = inputs
    loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def ours_detections(model, inputs):
    with torch.no_grad():
        return len(model(inputs[0])[0])


def torchvision_detections(model, inputs):
    with torch.no_grad():
        return len(model(inputs[0])[0]["boxes"])


def sgd(model):
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, momentum=0.9
    )


def timed(fn, log, device):
    """(wall-clock seconds, process CPU seconds) of one call, GPU work included; its result is
    appended to log."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    log.append(fn())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def compare(ours_fn, tv_fn, warmup, repeats, device):
    """Run the two functions alternately (warm-up runs first).

    Returns per function the (wall, cpu) medians in seconds and the result of its last run.
    """
    ours_results, tv_results, ours_times, tv_times = [], [], [], []
    for run in range(warmup + repeats):
        ours_time = timed(ours_fn, ours_results, device)
        tv_time = timed(tv_fn, tv_results, device)
        if run >= warmup:
            ours_times.append(ours_time)
            tv_times.append(tv_time)
    medians = [tuple(statistics.median(t) for t in zip(*times)) for times in (ours_times, tv_times)]
    return medians, (ours_results[-1], tv_results[-1])


def parse_size(text):
    height, width = text.lower().split("x")
    return int(height), int(width)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(800, 1067), (512, 683)],
                        help="image sizes as HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default, one per core); with 1 "
                        "the CPU-time ratio hardly depends on other processes")
    parser.add_argument("--torchvision-backbone", choices=("frozen", "default"), default="frozen",
                        help="frozen: FrozenBN, stem + layer1 frozen, as ours; default: "
                        "maskrcnn_resnet50_fpn(weights=None, weights_backbone=None) as is")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    device = benchmark_device(args.device, args.threads)
    print(
        "torch {}, torchvision {}, {} threads, {} {}{}".format(
            torch.__version__, torchvision.__version__, torch.get_num_threads(),
            platform.machine(), platform.processor() or "",
            ", " + torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        )
    )
    print("torchvision backbone: {}".format(args.torchvision_backbone))
    print(
        "| image (HxW) | step | ours (s/img) | torchvision (s/img) | ours / torchvision "
        "| CPU time: ours / torchvision |"
    )
    print("|---|---|---:|---:|---:|---:|")
    notes = []
    for height, width in args.sizes:
        ours = build_ours(device)
        tv = build_torchvision(height, args.torchvision_backbone).to(device)
        ours_inputs, tv_inputs = make_inputs(height, width, device)

        ours.train()
        tv.train()
        ours_sgd, tv_sgd = sgd(ours), sgd(tv)
        train = compare(
            lambda: train_step(ours, ours_sgd, ours_inputs),
            lambda: train_step(tv, tv_sgd, tv_inputs),
            args.warmup,
            args.repeats,
            device,
        )
        ours.eval()
        tv.eval()
        inference = compare(
            lambda: ours_detections(ours, ours_inputs),
            lambda: torchvision_detections(tv, tv_inputs),
            args.warmup,
            args.repeats,
            device,
        )
        for step, ((ours_time, tv_time), _) in (("train", train), ("inference", inference)):
            print(
                "| {}x{} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(
                    height, width, step, ours_time[0], tv_time[0], ours_time[0] / tv_time[0],
                    ours_time[1] / tv_time[1],
                ),
                flush=True,
            )
        notes.append(
            "{}x{}: last total train loss ours {:.3f}, torchvision {:.3f}; detections ours {}, "
            "torchvision {}".format(height, width, *train[1], *inference[1])
        )
    print()
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
