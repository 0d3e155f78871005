"""t-SNE of the meta weight generator's attention over the base classes (LST paper, Figure 6).

    python tools/lst_mwg_attention.py --experiment-dir OUT [--phase T] \
        [--output OUT/report/mwg_attention_tsne.png] [KEY VALUE ...]

Reads OUT/phase_<T>/config.yml, model_final.pth and weight_generator.pth (default T: the last
phase that has them), computes each new class's mean attention coefficients m over the base
classes on its support RoIs in its training images, and writes the t-SNE scatter plot (labelled
with the class names of the training json) and, beside it, a .json of the attention vectors.
KEY VALUE pairs override the phase's config (e.g. MODEL.DEVICE cpu). See
maskrcnn_benchmark/lst/mwg_analysis.py.
"""
import argparse
import logging
import os
import sys

from maskrcnn_benchmark.lst.mwg_analysis import write_attention_tsne


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment-dir", required=True, help="folder with phases.json and phase_<t>/")
    parser.add_argument("--phase", type=int, help="phase T >= 1 (default: the last finished MWG phase)")
    parser.add_argument("--output", help="png path (default: OUT/report/mwg_attention_tsne.png)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the phase's config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = write_attention_tsne(args.experiment_dir, args.phase, args.output, args.opts)
    except (FileNotFoundError, ValueError) as error:
        sys.exit("lst_mwg_attention.py: error: {}".format(error))
    output = args.output or os.path.join(args.experiment_dir, "report", "mwg_attention_tsne.png")
    print("phase {}: attention of {} new classes over {} base classes -> {} and {}".format(
        report["phase"], len(report["new_classes"]), len(report["base_classes"]), output,
        os.path.splitext(output)[0] + ".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
