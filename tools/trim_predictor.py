"""Remove the class-specific predictor layers from a detector checkpoint, to initialise a model
with other classes from it (e.g. LVIS from a COCO Mask R-CNN, as the paper does).

    python tools/trim_predictor.py --input e2e_mask_rcnn_R_50_FPN_1x.pth --output coco_trimmed.pth

Drops cls_score, bbox_pred and mask_fcn_logits (weights and biases) and every entry besides the
model (optimizer, scheduler, iteration), so training from OUTPUT starts at iteration 0 with those
layers freshly initialised. The output holds {"model": ...} and is written atomically.
"""
import argparse
import logging

from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save
from maskrcnn_benchmark.utils.model_serialization import load_checkpoint_model, remove_class_specific_layers

logger = logging.getLogger("trim_predictor")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="detector checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="trimmed checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state_dict, dropped = load_checkpoint_model(args.input)
    trimmed = remove_class_specific_layers(state_dict)
    removed = [key for key in state_dict if key not in trimmed]
    if not removed:
        raise SystemExit("{} has no class-specific predictor layer ({}); nothing to trim".format(
            args.input, ", ".join(("cls_score", "bbox_pred", "mask_fcn_logits"))))
    atomic_torch_save({"model": trimmed}, args.output)
    logger.info("removed %s", ", ".join(removed + dropped))
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
