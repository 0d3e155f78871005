"""Tables and plots of the LST paper from evaluation outputs (metrics.json).

    python tools/lst_report.py table1 --row "Baseline (Mask R-CNN)=RUN_A/inference/VAL/metrics.json" \
        --row "Repeat-factor sampling=RUN_B/inference/VAL/metrics.json" ... --output-dir report \
        [--title "..."] [--note "..."] [--paired "MODEL_A" "MODEL_B" ...]
        writes report/table1.md, table1.json and table1_ap_per_bin.png (paper Table 1 + APr/c/f;
        a row whose metrics.json does not exist yet is listed as "not run"); --name table3 writes
        table3.* instead (lst_scripts/table3.sh: one row per base and phase size). A row of
        several seeds lists their metrics.json files separated by commas, in the order of the
        seeds ("LST w/o MWG=S0/metrics.json,S1/metrics.json"): the table gives the mean ± sample
        standard deviation (ddof = 1), table1.json every seed's values; --paired A B adds the
        per-seed differences A - B (mean ± std over the seeds), for rows of the same seeds.

    python tools/lst_report.py phases --phases-dir OUTPUT_DIR [--compare "no KD=OTHER_DIR" ...]
        reads OUTPUT_DIR/phases.json and phase_<t>/inference/<dataset>/metrics.json up to the
        first unfinished phase; writes OUTPUT_DIR/report/table.md, table.json, ap_per_phase.png
        (old / new / all classes; --compare runs dashed) and ap_per_bin.png.

    python tools/lst_report.py mwg --with-mwg OUT_MWG --without-mwg OUT [--output-dir DIR] \
        [--train-json TRAIN_JSON]
        mask AP of each phase's new classes, and of those with fewer than 5 training instances
        (per_category_AP of phase_<t>/inference/<dataset>/metrics.json; instance counts from
        TRAIN_JSON, default the DATASETS.TRAIN of phase_<t>/config.yml), with and without the
        meta weight generator (paper Figure 9); writes DIR (default OUT_MWG/report)/
        mwg_new_class_ap.md, .json and .png.

    python tools/lst_report.py ablations --run "LST=OUT_S0,OUT_S1" --run "KD off=KD_S0,KD_S1" ... \
        --output-dir DIR [--title "..."] [--earlier-table ABLATIONS_JSON]
        the AP of the old, new and all classes (and AP(0,10), AP) after each phase of every variant
        (lst_scripts/ablations.sh; the paper's Figures 7-8), mean ± sample std over the variant's
        seeds (one experiment folder each, all with the same division); writes DIR/ablations.md,
        ablations.json and ablations_ap_per_phase.png (a panel per class group, error bars). As
        for table1, --earlier-table lends an earlier ablations.json's per-seed values to the runs
        that have not finished a phase here.

All print the markdown table. Values are mask AP in percent unless stated; "–" is undefined.
"""
import argparse
import logging
import sys

from maskrcnn_benchmark.lst.report import (
    write_ablation_report,
    write_mwg_report,
    write_phase_report,
    write_table1,
)


def labelled_path(text):
    """Parse "LABEL=PATH" (the label may contain spaces; split at the first "=")."""
    label, separator, path = text.partition("=")
    if not separator or not label.strip() or not path.strip():
        raise argparse.ArgumentTypeError(
            "expected LABEL=PATH, e.g. \"Baseline (Mask R-CNN)=output/run/inference/val/metrics.json\", "
            "got {!r}".format(text))
    return label.strip(), path.strip()


def labelled_paths(text):
    """Parse "LABEL=PATH[,PATH...]" (one metrics.json per seed) into (label, [paths])."""
    label, paths = labelled_path(text)
    files = [path.strip() for path in paths.split(",")]
    if not all(files):
        raise argparse.ArgumentTypeError("empty path in {!r}: give LABEL=PATH or LABEL=PATH,PATH,...".format(text))
    return label, files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    table1 = commands.add_parser("table1", help="the paper's Table 1 (+ APr/c/f) from runs' metrics.json")
    table1.add_argument("--row", dest="rows", action="append", required=True, type=labelled_paths,
                        metavar="MODEL=METRICS_JSON[,METRICS_JSON...]",
                        help="a table row, in order (repeatable); several files: one per seed, in seed order")
    table1.add_argument("--paired", nargs=2, action="append", default=[], metavar=("MODEL_A", "MODEL_B"),
                        help="the per-seed differences MODEL_A - MODEL_B, mean ± std (repeatable)")
    table1.add_argument("--output-dir", required=True, help="folder for table1.md/.json/.png")
    table1.add_argument("--title", default="Table 1", help="title of the table and plot")
    table1.add_argument("--note", help="text printed under the table")
    table1.add_argument("--fixed-ap", action="append", default=[], type=labelled_paths,
                        metavar="MODEL=METRICS_JSON[,METRICS_JSON...]",
                        help="a Fixed AP evaluation of a row's models, one file per seed (repeatable): the "
                        "row's Fixed AP columns come from it")
    table1.add_argument("--name", default="table1",
                        help="file name stem of the outputs (e.g. table3 for lst_scripts/table3.sh)")
    table1.add_argument("--earlier-table", metavar="TABLE1_JSON",
                        help="a table1.json written before (e.g. on another machine): its per-seed values "
                        "stand in for the runs whose metrics file does not exist (same model names, same seeds)")

    phases = commands.add_parser("phases", help="per-phase table and plots of an LST experiment")
    phases.add_argument("--phases-dir", required=True, metavar="OUTPUT_DIR",
                        help="the experiment folder holding phases.json and phase_<t>/")
    phases.add_argument("--compare", action="append", default=[], type=labelled_path,
                        metavar="LABEL=OTHER_PHASES_DIR",
                        help="another experiment to draw dashed in ap_per_phase.png (repeatable)")

    mwg = commands.add_parser("mwg", help="new-class AP per phase with and without MWG (Figure 9)")
    mwg.add_argument("--with-mwg", required=True, metavar="OUT_MWG",
                     help="experiment folder (phases.json, phase_<t>/) trained with MODEL.FEW_SHOT.ENABLED")
    mwg.add_argument("--without-mwg", required=True, metavar="OUT",
                     help="experiment folder of the same division trained without it")
    mwg.add_argument("--output-dir", help="folder for mwg_new_class_ap.* (default: OUT_MWG/report)")
    mwg.add_argument("--train-json", help="training json for the instance counts (default: from "
                     "phase_<t>/config.yml)")
    ablations = commands.add_parser("ablations", help="old / new / all AP per phase of variants of a chain "
                                    "(Figures 7-8), mean ± std over seeds")
    ablations.add_argument("--run", dest="runs", action="append", required=True, type=labelled_paths,
                           metavar="VARIANT=OUT[,OUT...]",
                           help="a variant and its experiment folders, one per seed in seed order (repeatable)")
    ablations.add_argument("--output-dir", required=True, help="folder for ablations.md/.json/_ap_per_phase.png")
    ablations.add_argument("--title", default="Ablations", help="title of the table and plot")
    ablations.add_argument("--earlier-table", metavar="ABLATIONS_JSON",
                           help="an ablations.json written before (e.g. on another machine): its per-seed values "
                           "stand in for the runs that have not finished a phase here (same variants, same seeds)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "table1":
            markdown = write_table1(args.rows, args.output_dir, args.title, args.note, args.name,
                                    [tuple(pair) for pair in args.paired], args.earlier_table, args.fixed_ap)
        elif args.command == "phases":
            markdown = write_phase_report(args.phases_dir, args.compare)
        elif args.command == "ablations":
            markdown = write_ablation_report(args.runs, args.output_dir, args.title, args.earlier_table)
        else:
            markdown = write_mwg_report(args.with_mwg, args.without_mwg, args.output_dir, args.train_json)
    except ValueError as e:  # ReportInputError, or a malformed phases.json
        sys.exit("lst_report.py: error: {}".format(e))
    print(markdown, end="")


if __name__ == "__main__":
    main()
