"""Expand a checkpoint's box predictor for the next LST phase (paper §3.2; authors' get_finetune_pth.py).

    python tools/lst_expand.py --input OLD.pth --output NEW.pth --config-file PHASE_CONFIG [--seed 0]
    python tools/lst_expand.py --input OLD.pth --output NEW.pth --num-classes N \
        [--std-cls S] [--std-bbox S] [--seed 0] [--cls-agnostic-bbox-reg]

N counts the classes of the expanded model, background included. With --config-file (the new
phase's config, e.g. OUT/phase_<t>/config.yml), N, the stds and the box-regression kind default to
its MODEL.ROI_BOX_HEAD.NUM_CLASSES, MODEL.LST.NEW_ROW_INIT_STD_CLS / _BBOX and
MODEL.CLS_AGNOSTIC_BBOX_REG, and the seed to its SEED (the phase's, see lst/phase_config.py); without
it the stds default to those keys' defaults and the seed to 0.
The old classifier and box-regression rows are copied, the new ones drawn from N(0, std^2) (biases 0),
everything else is kept. NEW.pth holds {"model": ...} only: the optimizer, scheduler, iteration and
random states are dropped, so training the new phase starts at iteration 0. It is written atomically.
"""
import argparse
import logging

import torch

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.lst.expansion import expand_box_predictor
from maskrcnn_benchmark.lst.phase_config import load_yaml_config
from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save
from maskrcnn_benchmark.utils.model_serialization import load_checkpoint_model

logger = logging.getLogger("lst_expand")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="checkpoint of the previous phase (.pth)")
    parser.add_argument("--output", required=True, help="expanded checkpoint to write (.pth)")
    parser.add_argument("--config-file", help="the new phase's config: defaults of the options below")
    parser.add_argument("--num-classes", type=int,
                        help="classes of the expanded model, background included (default: the config's "
                             "MODEL.ROI_BOX_HEAD.NUM_CLASSES)")
    parser.add_argument("--std-cls", type=float,
                        help="std of the new classifier rows (default: MODEL.LST.NEW_ROW_INIT_STD_CLS)")
    parser.add_argument("--std-bbox", type=float,
                        help="std of the new box-regression rows (default: MODEL.LST.NEW_ROW_INIT_STD_BBOX)")
    parser.add_argument("--seed", type=int,
                        help="seed of the new rows' random draws (default: the config's SEED, the phase's; "
                             "0 without --config-file)")
    parser.add_argument("--cls-agnostic-bbox-reg", action="store_true",
                        help="the model uses MODEL.CLS_AGNOSTIC_BBOX_REG (only needed to tell a 2-class "
                             "model's 8 box-regression rows apart)")
    args = parser.parse_args(argv)
    config = load_yaml_config(args.config_file) if args.config_file else default_cfg
    if args.num_classes is None:
        if not args.config_file:
            parser.error("give --num-classes or --config-file")
        args.num_classes = config.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    if args.std_cls is None:
        args.std_cls = config.MODEL.LST.NEW_ROW_INIT_STD_CLS
    if args.std_bbox is None:
        args.std_bbox = config.MODEL.LST.NEW_ROW_INIT_STD_BBOX
    if args.seed is None:
        args.seed = config.SEED if args.config_file else 0
        if args.seed < 0:
            parser.error("{} sets SEED -1 (random): give --seed, or write the phase config with "
                         "tools/lst_phase_config.py, which resolves it".format(args.config_file))
    if args.config_file and config.MODEL.CLS_AGNOSTIC_BBOX_REG:
        args.cls_agnostic_bbox_reg = True
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state_dict, dropped = load_checkpoint_model(args.input)

    generator = torch.Generator().manual_seed(args.seed)
    try:
        expanded = expand_box_predictor(
            state_dict,
            args.num_classes,
            std_cls=args.std_cls,
            std_bbox=args.std_bbox,
            generator=generator,
            cls_agnostic_bbox_reg=True if args.cls_agnostic_bbox_reg else None,
        )
    except (KeyError, ValueError) as error:
        raise SystemExit("{}: {}".format(args.input, error.args[0]))
    atomic_torch_save({"model": expanded}, args.output)
    grown = [key for key in expanded if expanded[key].shape != state_dict[key].shape]
    for key in grown:
        logger.info("%s: %s -> %s", key, tuple(state_dict[key].shape), tuple(expanded[key].shape))
    if dropped:
        logger.info("dropped checkpoint entries: %s", ", ".join(dropped))
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
