"""The paper's tables and plots from evaluation outputs (metrics.json files).

Three reports:

* Table 1 of the LST paper (plus APr/c/f): one row per model, read from the metrics.json that
  the LVIS evaluation writes ({"bbox": {...}, "segm": {...}}, see lvis_eval.lvis_metrics), or
  from several, one per seed: then the mean ± sample standard deviation (ddof = 1) over the
  seeds, and paired differences of two rows over the same seeds. When a row's metrics.json has
  Fixed AP (TEST.LVIS_FIXED_AP: "segm"."fixed_AP"), the table gains Fixed AP columns.
* The LST phase report: one row per class-incremental phase of an experiment directory
  (phases.json and phase_<t>/inference/<dataset>/metrics.json), with the AP of the old, new and
  all classes, and its plots (AP per phase, like the paper's Figures 7-8; AP per bin).
* The new-class AP per phase of two experiments, with and without the meta weight generator,
  also over the new classes with fewer than 5 training instances (the paper's Figure 9).
* The ablations: the old / new / all AP per phase of several variants of an LST chain (the
  paper's Figures 7-8: distillation off, other replays), each over one or more seeds.

metrics.json holds APs on a 0..1 scale with -1 when undefined; the reports show percent with one
decimal, like the paper, and an undefined value as "–" (markdown) or null (json).
"""
import json
import logging
import math
import os
from collections import OrderedDict

import numpy as np
from matplotlib.figure import Figure

from maskrcnn_benchmark.data.datasets.evaluation.lvis.bins import INSTANCE_COUNT_BINS, training_instance_counts
from maskrcnn_benchmark.utils.miscellaneous import atomic_open, atomic_write_json, atomic_write_text

from .experiment import REPORT_FILE_NAMES, Experiment

logger = logging.getLogger(__name__)

UNDEFINED = "–"
PLOT_DPI = 150
BIN_LABELS = list(INSTANCE_COUNT_BINS)
GROUP_NAMES = ("old", "new", "all")

# Metric columns: column name -> location, the keys from the iou type down to the value.
_BIN_COLUMNS = [("AP" + label, ("segm", "bins", label)) for label in BIN_LABELS]
_SUMMARY_COLUMNS = [
    ("AP", ("segm", "AP")),
    ("AP50", ("segm", "AP50")),
    ("AP75", ("segm", "AP75")),
    ("AP^bb", ("bbox", "AP")),
    ("APr", ("segm", "APr")),
    ("APc", ("segm", "APc")),
    ("APf", ("segm", "APf")),
]
_GROUP_COLUMNS = [("AP " + name, ("segm", "groups", name)) for name in GROUP_NAMES]
# Fixed AP (Dave et al. 2021, Sec. 3), in Table 1 only when a row's metrics.json has it.
FIXED_AP_LOCATION = ("segm", "fixed_AP")
_FIXED_AP_COLUMNS = [
    ("Fixed AP", FIXED_AP_LOCATION + ("AP",)),
    ("Fixed AP(0,10)", FIXED_AP_LOCATION + ("bins", "(0,10)")),
    ("Fixed APr", FIXED_AP_LOCATION + ("APr",)),
]

TABLE1_METRICS = OrderedDict(_BIN_COLUMNS + _SUMMARY_COLUMNS)
TABLE1_COLUMNS = ["model"] + list(TABLE1_METRICS)
TABLE1_FIXED_AP_METRICS = OrderedDict(_FIXED_AP_COLUMNS)
PHASE_METRICS = OrderedDict(_BIN_COLUMNS + _SUMMARY_COLUMNS + _GROUP_COLUMNS)
PHASE_COLUMNS = ["phase", "#classes"] + list(PHASE_METRICS)


class ReportInputError(ValueError):
    """An input of a report (metrics.json, phases.json) is malformed; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------------------------

def load_metrics(path):
    """Read a metrics.json; raise ReportInputError naming ``path`` if it is malformed.

    Returns:
        dict: {"segm": {...}, "bbox": {...} (optional)} as lvis_metrics writes it.
    """
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError("metrics file {}: not valid JSON ({})".format(path, e)) from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("segm"), dict):
        raise ReportInputError(
            "metrics file {}: no \"segm\" entry; expected {{\"bbox\": {{...}}, \"segm\": {{...}}}} "
            "as written by the LVIS evaluation of a Mask R-CNN run".format(path))
    for iou_type in ("bbox", "segm"):
        if iou_type in metrics and not isinstance(metrics[iou_type], dict):
            raise ReportInputError("metrics file {}: \"{}\" is not an object".format(
                path, iou_type))
    return metrics


def _metric_value(metrics, location, path):
    """The AP at ``location`` (iou type, key, sub-key) in percent, rounded to one decimal, or
    None when it is missing or undefined (-1 or NaN)."""
    value = _metric_percent(metrics, location, path)
    return None if value is None else round(value, 1)


def _metric_entry(metrics, location, path):
    """The value at ``location`` (keys from the iou type down), or None when a key is missing."""
    value = metrics
    for depth, key in enumerate(location):
        if not isinstance(value, dict):
            raise ReportInputError("metrics file {}: {} is not an object".format(
                path, ".".join('"{}"'.format(k) for k in location[:depth])))
        value = value.get(key)
        if value is None:
            return None
    return value


def _metric_percent(metrics, location, path):
    """The AP at ``location`` in percent, unrounded, or None (see _metric_value)."""
    value = _metric_entry(metrics, location, path)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportInputError("metrics file {}: {} is {!r}, not a number".format(
            path, ".".join(location), value))
    if math.isnan(value) or value < 0:
        return None
    return 100.0 * value


def metric_values(metrics, columns, path):
    """OrderedDict column -> percent (one decimal) or None, for the ``columns`` mapping
    (TABLE1_METRICS, TABLE1_FIXED_AP_METRICS or PHASE_METRICS)."""
    return OrderedDict((name, _metric_value(metrics, location, path))
                       for name, location in columns.items())


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------

def format_cell(value):
    """A table cell: one decimal for a number, "–" for None, the text otherwise."""
    if value is None:
        return UNDEFINED
    if isinstance(value, float):
        return "{:.1f}".format(value)
    return str(value)


def markdown_table(columns, rows):
    """A GitHub markdown table of ``rows`` (dicts keyed by ``columns``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _save_figure(figure, path):
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=PLOT_DPI, bbox_inches="tight")


def _plot_value(value):
    return float("nan") if value is None else value


def plot_grouped_bins(series, path, title, errors=None):
    """Grouped bar plot of mask AP per training instance-count bin, saved as a png at ``path``.

    Arguments:
        series (list[tuple[str, dict]]): (legend label, {"AP<bin>": percent or None}) per bar group
            member; an undefined bin draws no bar.
        errors (list[dict] or None): per series member, {"AP<bin>": error bar half-length or None}.
    """
    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    positions = list(range(len(BIN_LABELS)))
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series):
        offset = (index - (len(series) - 1) / 2.0) * width
        heights = [_plot_value(values.get("AP" + b)) for b in BIN_LABELS]
        spread = None
        if errors is not None:
            spread = [errors[index].get("AP" + b) or 0.0 for b in BIN_LABELS]
        axes.bar([p + offset for p in positions], heights, width=width, label=label, yerr=spread, capsize=2)
        for position, height in zip(positions, heights):
            if math.isnan(height):  # mark an undefined bin, which would look like AP 0
                axes.text(position + offset, 0, UNDEFINED, ha="center", va="bottom")
    if not series:
        axes.text(0.5, 0.5, "no finished runs yet", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_xticks(positions)
    axes.set_xticklabels(BIN_LABELS)
    axes.set_xlabel("training instances per category")
    axes.set_ylabel("mask AP (%)")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    if series:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------

def _file_list(metrics_files):
    return [metrics_files] if isinstance(metrics_files, str) else list(metrics_files)


def _rounded(value, digits):
    return None if value is None else round(value, digits)


def table1_metrics(entries, fixed_ap=None):
    """TABLE1_METRICS, plus TABLE1_FIXED_AP_METRICS when one of the rows' metrics files (or of the
    Fixed AP evaluations in ``fixed_ap``, model -> files) has Fixed AP."""
    files = [path for _, metrics_files in entries for path in _file_list(metrics_files)]
    files += [path for paths in (fixed_ap or {}).values() for path in paths]
    for path in files:
        if os.path.isfile(path) and _metric_entry(load_metrics(path), FIXED_AP_LOCATION, path) is not None:
            return OrderedDict(list(TABLE1_METRICS.items()) + list(TABLE1_FIXED_AP_METRICS.items()))
    return TABLE1_METRICS


def _earlier_rows(path, written_by, keys):
    """The "rows" of an earlier report's JSON file, each checked to have ``keys`` (name -> type)
    and a "per_seed" dict; ReportInputError naming the file and what it should be otherwise."""
    try:
        with open(path) as f:
            table = json.load(f)
    except OSError as e:
        raise ReportInputError("earlier table {}: cannot be read ({})".format(path, e.strerror)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError("earlier table {}: not valid JSON ({})".format(path, e)) from None
    rows = table.get("rows") if isinstance(table, dict) else None
    keys = dict(keys, per_seed=dict)
    if not isinstance(rows, list) or not all(
            isinstance(row, dict) and all(isinstance(row.get(key), kind) for key, kind in keys.items()) for row in rows):
        raise ReportInputError("earlier table {}: expected the {} that {} writes, with \"rows\" of {}".format(
            path, *written_by, " and ".join('"{}"'.format(key) for key in keys)))
    return rows


def load_earlier_table(path):
    """The per-seed values of an earlier table1.json, for runs whose metrics files are elsewhere
    (another machine, a deleted output folder).

    Returns:
        dict: model -> {column -> [percent (one decimal) or None, one per seed]}.
    """
    rows = _earlier_rows(path, ("table1.json", "lst_report.py table1"), {"model": str})
    return {row["model"]: row["per_seed"] for row in rows}


def earlier_row(earlier, model):
    """The per-seed values of row ``model`` in an earlier table (load_earlier_table), or None: the
    row of that name or, when there is none, the one row named ``model`` plus a remark in
    parentheses (table3.sh adds "(phases 0-T)" from a run's division, which a machine without
    the run cannot know)."""
    if not earlier:
        return None
    if model in earlier:
        return earlier[model]
    remarked = [name for name in earlier if name.startswith(model + " (") and name.endswith(")")]
    return earlier[remarked[0]] if len(remarked) == 1 else None


def per_seed_percents(metrics_files, columns=TABLE1_METRICS, earlier=None, fixed_ap_files=None):
    """The values of one row, one run per file (seed).

    Arguments:
        earlier (dict or None): column -> [percent or None, one per seed], the row in an earlier
            table (load_earlier_table); the value of a seed whose file does not exist comes from it.
        fixed_ap_files (list[str] or None): per seed, the metrics.json of an evaluation of the same
            model with Fixed AP; where it exists, the Fixed AP columns come from it.

    Returns:
        tuple: ({column of ``columns``: [unrounded percent or None, one per file]}, [where each
        run's values come from: "file", "earlier table" or None for a run not found]).
    """
    values = OrderedDict((name, []) for name in columns)
    sources = []
    for seed, path in enumerate(metrics_files):
        if os.path.isfile(path):
            metrics = load_metrics(path)
            for name, location in columns.items():
                values[name].append(_metric_percent(metrics, location, path))
            sources.append("file")
            continue
        earlier_values = [(earlier or {}).get(name) or [] for name in columns]
        found = [column[seed] if seed < len(column) else None for column in earlier_values]
        for name, value in zip(columns, found):
            values[name].append(value)
        sources.append("earlier table" if any(value is not None for value in found) else None)
    for seed, path in enumerate(fixed_ap_files or []):
        if seed < len(metrics_files) and os.path.isfile(path):
            metrics = load_metrics(path)
            for name in TABLE1_FIXED_AP_METRICS:
                if name in values:
                    values[name][seed] = _metric_percent(metrics, TABLE1_FIXED_AP_METRICS[name], path)
    return values, sources


def mean_and_std(values):
    """(mean, sample standard deviation with ddof = 1, n) of the values that are not None; the std
    is None below two values, the mean None without any."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None, 0
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return float(np.mean(defined)), std, len(defined)


def table1_values(entries, earlier=None, fixed_ap=None):
    """Every row's per-seed values, each metrics file read once (for table1_rows and
    paired_differences).

    Arguments:
        entries (list[tuple[str, str or list[str]]]): (model name, metrics.json path, or one path
            per seed) per row, in order.
        earlier (dict or None): load_earlier_table's values, for the runs whose file does not exist.
        fixed_ap (dict or None): model -> the metrics.json of a Fixed AP evaluation of each seed's
            model, which the Fixed AP columns of that row come from (when the file exists).

    Returns:
        OrderedDict: model -> (metrics files, per_seed_percents' values and sources), in row order;
        the values have a column per table1_metrics(entries, fixed_ap).
    """
    columns = table1_metrics(entries, fixed_ap)
    table = OrderedDict()
    for model, metrics_files in entries:
        files = _file_list(metrics_files)
        table[model] = (files,) + per_seed_percents(files, columns, earlier_row(earlier, model),
                                                    (fixed_ap or {}).get(model))
    return table


def table1_rows(values):
    """Rows of Table 1 from table1_values(...).

    Returns:
        list[OrderedDict]: "model", "metrics_files", "status" ("ok", "not run" when no run is
        found, "partial" when some are), "runs" (runs found), "sources" (per seed: "file",
        "earlier table" or None), a value per column of the values (the mean over the runs, percent, one decimal, or None), "std"
        (column -> sample standard deviation, ddof = 1, two decimals; None below two runs), "n"
        (column -> the runs with a value) and "per_seed" (column -> the value of each file, one decimal, None for a missing file or value).
    """
    rows = []
    for model, (files, per_seed, sources) in values.items():
        runs = sum(source is not None for source in sources)
        status = "ok" if runs == len(files) else ("not run" if runs == 0 else "partial")
        row = OrderedDict([("model", model), ("metrics_files", files), ("status", status), ("runs", runs),
                           ("sources", sources)])
        statistics = {name: mean_and_std(column) for name, column in per_seed.items()}
        row.update((name, _rounded(statistics[name][0], 1)) for name in per_seed)
        row["std"] = OrderedDict((name, _rounded(statistics[name][1], 2)) for name in per_seed)
        row["n"] = OrderedDict((name, statistics[name][2]) for name in per_seed)
        row["per_seed"] = OrderedDict((name, [_rounded(v, 1) for v in column]) for name, column in per_seed.items())
        rows.append(row)
    return rows


def table1_columns(rows):
    """TABLE1_COLUMNS, plus the Fixed AP columns when the rows have them."""
    fixed_ap = any(name in row for row in rows for name in TABLE1_FIXED_AP_METRICS)
    return TABLE1_COLUMNS + (list(TABLE1_FIXED_AP_METRICS) if fixed_ap else [])


def paired_differences(values, pairs):
    """Paired comparisons of Table 1 rows over the same seeds.

    Arguments:
        values: table1_values(...); the i-th file of every row is the run with the i-th seed.
        pairs (list[tuple[str, str]]): (model A, model B), for the differences A - B.

    Returns:
        list[OrderedDict]: "comparison" ("A − B"), "a", "b", a value per column of TABLE1_METRICS
        (the mean of the per-seed differences over the seeds where both runs have the value, two
        decimals, or None), "std" (column -> their sample standard deviation, ddof = 1, two
        decimals, None below two seeds), "n" (column -> that number of seeds) and "per_seed"
        (column -> the difference of each seed, two decimals, or None).
    """
    comparisons = []
    for model_a, model_b in pairs:
        for model in (model_a, model_b):
            if model not in values:
                raise ReportInputError("paired comparison {!r} - {!r}: no row is named {!r}; rows: {}".format(
                    model_a, model_b, model, ", ".join(repr(m) for m in values)))
        (files_a, values_a, _), (files_b, values_b, _) = values[model_a], values[model_b]
        if len(files_a) != len(files_b):
            raise ReportInputError(
                "paired comparison {!r} - {!r}: the rows have {} and {} metrics files; a paired comparison "
                "needs one file per seed, the same seeds in the same order".format(
                    model_a, model_b, len(files_a), len(files_b)))
        row = OrderedDict([("comparison", "{} − {}".format(model_a, model_b)), ("a", model_a), ("b", model_b)])
        differences = OrderedDict(
            (name, [None if a is None or b is None else a - b for a, b in zip(values_a[name], values_b[name])])
            for name in TABLE1_METRICS)
        statistics = {name: mean_and_std(column) for name, column in differences.items()}
        row.update((name, _rounded(statistics[name][0], 2)) for name in TABLE1_METRICS)
        row["std"] = OrderedDict((name, _rounded(statistics[name][1], 2)) for name in TABLE1_METRICS)
        row["n"] = OrderedDict((name, statistics[name][2]) for name in TABLE1_METRICS)
        row["per_seed"] = OrderedDict((name, [_rounded(d, 2) for d in column]) for name, column in differences.items())
        comparisons.append(row)
    return comparisons


def _mean_std_cell(mean, std, digits=1):
    if mean is None:
        return UNDEFINED
    if std is None:
        return "{:.{}f}".format(mean, digits)
    return "{:.{}f} ± {:.{}f}".format(mean, digits, std, digits)


def _model_cell(row):
    files = len(row["metrics_files"])
    if files == 1:
        return row["model"]
    if row["runs"] == files:
        return "{} ({} seeds)".format(row["model"], files)
    return "{} ({} of {} seeds)".format(row["model"], row["runs"], files)


def _earlier_runs_note(sources, earlier_table, kind="row", runs_are=(
        "Run i is the row's i-th metrics file, counted from 0 (seed i with the table scripts' --seeds).")):
    """The sentence that names the runs whose values come from the earlier table, or None.

    ``sources``: name (of a row, or a ``kind`` of row) -> per seed, "earlier table" for a run
    from it; ``runs_are`` says what run i is."""
    seeds_of_rows = OrderedDict()
    for name, row_sources in sources.items():
        seeds = tuple(seed for seed, source in enumerate(row_sources) if source == "earlier table")
        if seeds:
            seeds_of_rows.setdefault(seeds, []).append(name)
    if not seeds_of_rows:
        return None
    groups = []
    for seeds, names in seeds_of_rows.items():
        runs = "run {}".format(seeds[0]) if len(seeds) == 1 else "runs {}".format(", ".join(map(str, seeds)))
        groups.append("{} of {}".format(runs, "every " + kind if len(names) == len(sources) else ", ".join(names)))
    return "From the earlier table {} (metrics files not found here; values with one decimal): {}. {}".format(
        earlier_table, "; ".join(groups), runs_are)


def table1_markdown(rows, title=None, note=None, comparisons=(), earlier_table=None):
    """Table 1 as markdown: the title, the table (a row not run says so; a row of several seeds
    gives mean ± std), the paired differences, the notes (and which runs come from
    ``earlier_table``, the path of the earlier table1.json)."""
    columns = table1_columns(rows)
    cells = []
    for row in rows:
        if row["status"] == "not run":
            cells.append({"model": _model_cell(row), TABLE1_COLUMNS[1]: "not run"})
            continue
        cell = {name: _mean_std_cell(row[name], row["std"][name]) for name in columns[1:]}
        for name in columns[1:]:  # a value from fewer runs than the row's (e.g. Fixed AP of one seed)
            if 0 < row["n"][name] < row["runs"]:
                cell[name] += " (n = {})".format(row["n"][name])
        cells.append(dict(cell, model=_model_cell(row)))
    parts = ["## " + title] if title else []
    parts.append(markdown_table(columns, cells))
    parts.append("Mask AP (%) unless stated; AP^bb is box AP; {} = undefined (no category with "
                 "ground truth).".format(UNDEFINED))
    if columns != TABLE1_COLUMNS:
        parts.append("Fixed AP (Dave et al. 2021): each category's best detections over the "
                     "dataset (TEST.LVIS_FIXED_AP_DETS_PER_CLASS), no per-image cap; {} where a "
                     "run did not compute it.".format(UNDEFINED))
    if any(len(row["metrics_files"]) > 1 for row in rows):
        parts.append("A row of n seeds (one run each, the same data) gives the mean ± the sample "
                     "standard deviation (ddof = 1) over its n runs.")
    earlier_note = _earlier_runs_note(OrderedDict((row["model"], row["sources"]) for row in rows), earlier_table)
    if earlier_note:
        parts.append(earlier_note)
    if comparisons:
        columns = ["comparison"] + list(TABLE1_METRICS)
        paired_cells = []
        for comparison in comparisons:
            counts = sorted(set(comparison["n"].values()))
            cell = {name: _mean_std_cell(comparison[name], comparison["std"][name], 2) for name in TABLE1_METRICS}
            paired_cells.append(dict(cell, comparison="{} (n = {})".format(
                comparison["comparison"], "/".join(str(n) for n in counts))))
        parts.append("### Paired differences over the same seeds\n\n" + markdown_table(columns, paired_cells))
        parts.append("Per seed, the row's AP minus the other row's (points); mean ± sample standard "
                     "deviation (ddof = 1) of these differences over the n seeds where both ran (the "
                     "standard error of the mean difference is std / √n).")
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def write_table1(entries, output_dir, title="Table 1", note=None, name="table1", pairs=(), earlier_table=None,
                 fixed_ap=()):
    """Write output_dir/<name>.md, <name>.json and <name>_ap_per_bin.png (error bars: the std over
    the seeds); return the markdown.

    Arguments:
        entries (list[tuple[str, str or list[str]]]): (model name, metrics.json path or one per
            seed); a missing file is a run "not run".
        name (str): file name stem, e.g. "table3" for the grid of base and phase sizes.
        pairs (list[tuple[str, str]]): (model A, model B) rows to compare seed by seed (A - B).
        earlier_table (str or None): a table1.json written before (it may be output_dir's own),
            whose per-seed values stand in for the runs whose metrics file does not exist, row by
            row (the same model names, see earlier_row) and seed by seed (the same seeds in the
            same order).
        fixed_ap (list[tuple[str, list[str]]]): (model name, one metrics.json per seed) of Fixed AP
            evaluations of the rows' models (lst_scripts/table1.sh), for those columns.
    """
    earlier = load_earlier_table(earlier_table) if earlier_table else None
    models = [model for model, _ in entries]
    for model, _ in fixed_ap:
        if model not in models:
            raise ReportInputError("Fixed AP of {!r}: no row is named so; rows: {}".format(
                model, ", ".join(repr(m) for m in models)))
    values = table1_values(entries, earlier, {model: _file_list(files) for model, files in fixed_ap})
    rows = table1_rows(values)
    comparisons = paired_differences(values, pairs)
    markdown = table1_markdown(rows, title, note, comparisons, earlier_table)
    atomic_write_text(os.path.join(output_dir, name + ".md"), markdown)
    atomic_write_json({"title": title, "note": note, "columns": table1_columns(rows), "std": "sample, ddof=1",
                       "earlier_table": earlier_table, "rows": rows, "paired": comparisons},
                      os.path.join(output_dir, name + ".json"))
    finished = [row for row in rows if row["status"] != "not run"]
    plot_grouped_bins([(row["model"], row) for row in finished],
                      os.path.join(output_dir, name + "_ap_per_bin.png"),
                      "{}: mask AP per training instance-count bin".format(title),
                      errors=[row["std"] for row in finished])
    return markdown


# ---------------------------------------------------------------------------------------------
# LST phase report
# ---------------------------------------------------------------------------------------------

def phase_metrics_file(phases_dir, phase):
    """The metrics.json of phase ``phase`` of the experiment ``phases_dir``, or None when there is
    none (the first dataset by name when several were evaluated, with a warning)."""
    return Experiment(phases_dir).phase(phase).metrics_file()


def phase_rows(phases_dir, phases=None):
    """Rows of the phase table, from phase 0 up to the first phase without metrics.

    Returns:
        list[OrderedDict]: "phase", "#classes" (classes seen up to the phase), "status"
        ("finished" or, for the last row only, "not finished"), "metrics_file", and a value
        (percent or None) per column of PHASE_METRICS. Phases after the first unfinished one are
        not listed.
    """
    phases = phases if phases is not None else Experiment(phases_dir).load_phases()
    rows, classes_seen = [], 0
    for phase, group in enumerate(phases["groups"]):
        classes_seen += len(group)
        metrics_file = phase_metrics_file(phases_dir, phase)
        row = OrderedDict([("phase", phase), ("#classes", classes_seen)])
        if metrics_file is None:
            row.update([("status", "not finished"), ("metrics_file", None)])
            row.update((name, None) for name in PHASE_METRICS)
            rows.append(row)
            break
        row.update([("status", "finished"), ("metrics_file", metrics_file)])
        row.update(metric_values(load_metrics(metrics_file), PHASE_METRICS, metrics_file))
        rows.append(row)
    return rows


def phase_title(phases, phases_dir):
    parts = ["LST phases of {}".format(os.path.basename(os.path.normpath(phases_dir)))]
    if "base" in phases and "phase_size" in phases:
        parts.append("base {}, phase size {}, {} phases".format(
            phases["base"], phases["phase_size"], len(phases["groups"])))
    return ": ".join(parts)


def phase_markdown(rows, title):
    """The phase table as markdown (an unfinished phase says so in its first metric column)."""
    cells = [row if row["status"] == "finished" else dict(row, **{PHASE_COLUMNS[2]: "not finished"})
             for row in rows]
    return "\n\n".join([
        "## " + title,
        markdown_table(PHASE_COLUMNS, cells),
        "Mask AP (%) unless stated; AP^bb is box AP; AP old / new / all: classes of earlier "
        "phases / of this phase / all seen so far; {} = undefined.".format(UNDEFINED),
    ]) + "\n"


def plot_ap_per_phase(rows, path, title, comparisons=()):
    """Mask AP of the old, new and all classes against the phase index (paper Figs. 7-8).

    Arguments:
        rows (list[dict]): phase_rows of the run.
        comparisons (list[tuple[str, list[dict]]]): (label, phase_rows) of other runs, drawn
            dashed ("all" and "new" only).
    """
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    finished = [row for row in rows if row["status"] == "finished"]
    for name, marker in zip(GROUP_NAMES, ("s", "^", "o")):
        axes.plot([row["phase"] for row in finished],
                  [_plot_value(row["AP " + name]) for row in finished],
                  marker=marker, label=name + " classes")
    for label, other_rows in comparisons:
        other = [row for row in other_rows if row["status"] == "finished"]
        color = None
        for name, marker in (("all", "o"), ("new", "^")):
            lines = axes.plot([row["phase"] for row in other],
                              [_plot_value(row["AP " + name]) for row in other],
                              linestyle="--", marker=marker, color=color,
                              label="{}: {} classes".format(label, name))
            color = lines[0].get_color()
    phase_count = max([len(rows)] + [len(r) for _, r in comparisons])
    axes.set_xticks(list(range(phase_count)))
    axes.set_xlabel("phase")
    axes.set_ylabel("mask AP (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save_figure(figure, path)


def write_phase_report(phases_dir, comparisons=()):
    """Write phases_dir/report/{table.md, table.json, ap_per_phase.png, ap_per_bin.png}.

    Arguments:
        phases_dir (str): OUTPUT_DIR of an LST experiment (phases.json, phase_<t>/).
        comparisons (list[tuple[str, str]]): (label, phases_dir) of other runs to draw dashed in
            ap_per_phase.png.

    Returns:
        str: the markdown table (as written to table.md).
    """
    phases = Experiment(phases_dir).load_phases()
    rows = phase_rows(phases_dir, phases)
    title = phase_title(phases, phases_dir)
    markdown = phase_markdown(rows, title)
    report_dir = Experiment(phases_dir).report_dir
    table_md, table_json, ap_per_phase_png, ap_per_bin_png = (
        os.path.join(report_dir, name) for name in REPORT_FILE_NAMES)
    atomic_write_text(table_md, markdown)
    atomic_write_json({"title": title, "columns": PHASE_COLUMNS, "rows": rows}, table_json)
    other_runs = [(label, phase_rows(other_dir)) for label, other_dir in comparisons]
    plot_ap_per_phase(rows, ap_per_phase_png, "Mask AP per phase: old, new and all classes", other_runs)
    series = [("phase {}".format(row["phase"]), row) for row in rows
              if row["status"] == "finished"]
    plot_grouped_bins(series, ap_per_bin_png, "Mask AP per training instance-count bin, after each phase")
    return markdown


# ---------------------------------------------------------------------------------------------
# Ablations: variants of an LST chain, phase by phase (paper Figures 7-8)
# ---------------------------------------------------------------------------------------------

ABLATION_METRICS = ["AP old", "AP new", "AP all", "AP(0,10)", "AP"]


def load_earlier_ablations(path):
    """The per-seed values of an earlier ablations.json, for runs whose experiment folders are
    elsewhere.

    Returns:
        dict: (variant, phase) -> {column -> [percent (one decimal) or None, one per seed]}.
    """
    rows = _earlier_rows(path, ("ablations.json", "lst_report.py ablations"), {"variant": str, "phase": int})
    return {(row["variant"], row["phase"]): row["per_seed"] for row in rows}


def _variant_phase_rows(runs):
    """Per variant of ``runs``, per experiment folder, phase_rows of the folder ([] when it has not
    started), and the division's groups (None when no folder has started); every folder must
    divide the classes as the first one does."""
    groups, reference, variants = None, None, []
    for label, phase_dirs in runs:
        seed_rows = []
        for phases_dir in phase_dirs:
            experiment = Experiment(phases_dir)
            if not os.path.isfile(experiment.phases_file):  # not started yet
                seed_rows.append([])
                continue
            phases = experiment.load_phases()
            if groups is None:
                groups, reference = phases["groups"], phases_dir
            elif phases["groups"] != groups:
                raise ReportInputError("{} divides the classes differently from {} (phases.json groups "
                                       "differ): the ablations must share one division".format(phases_dir, reference))
            seed_rows.append(phase_rows(phases_dir, phases))
        variants.append((label, seed_rows))
    return variants, groups


def ablation_rows(runs, earlier=None):
    """Rows of the ablation table: one per variant and phase.

    Arguments:
        runs (list[tuple[str, list[str]]]): (variant label, experiment folders, one per seed in
            seed order); every folder must divide the classes as the first one does.
        earlier (dict or None): load_earlier_ablations' values: a run that has not finished a
            phase here takes that phase's values from it (the same variant labels and seeds).

    Returns:
        list[OrderedDict]: "variant", "phase", "seeds" (finished runs of that phase), "sources"
        (per seed: "file", "earlier table" or None), then per column of ABLATION_METRICS its mean
        over those runs (percent, one decimal, or None), "std" (column -> sample standard
        deviation, ddof = 1, two decimals; None below two runs) and "per_seed" (column -> each
        run's value, one decimal, None where not finished).
    """
    earlier = earlier or {}
    variants, groups = _variant_phase_rows(runs)
    num_phases = len(groups) if groups else 1 + max((phase for _, phase in earlier), default=-1)
    rows = []
    for label, seed_rows in variants:
        for phase in range(num_phases):
            finished = [r[phase] if phase < len(r) and r[phase]["status"] == "finished" else None for r in seed_rows]
            per_seed = OrderedDict((name, [r[name] if r else None for r in finished]) for name in ABLATION_METRICS)
            sources = ["file" if r else None for r in finished]
            previous = earlier.get((label, phase), {})
            for seed in (seed for seed, source in enumerate(sources) if source is None):
                found = {name: (previous.get(name) or [])[seed] if seed < len(previous.get(name) or []) else None
                         for name in ABLATION_METRICS}
                if any(value is not None for value in found.values()):
                    sources[seed] = "earlier table"
                    for name, value in found.items():
                        per_seed[name][seed] = value
            row = OrderedDict([("variant", label), ("phase", phase), ("seeds", sum(s is not None for s in sources)),
                               ("sources", sources)])
            statistics = {name: mean_and_std(column) for name, column in per_seed.items()}
            row.update((name, _rounded(statistics[name][0], 1)) for name in ABLATION_METRICS)
            row["std"] = OrderedDict((name, _rounded(statistics[name][1], 2)) for name in ABLATION_METRICS)
            row["per_seed"] = OrderedDict((name, [_rounded(v, 1) for v in column]) for name, column in per_seed.items())
            rows.append(row)
    return rows


def ablation_markdown(rows, title, earlier_table=None):
    columns = ["variant", "phase", "seeds"] + ABLATION_METRICS
    cells = [dict({name: _mean_std_cell(row[name], row["std"][name]) for name in ABLATION_METRICS},
                  variant=row["variant"], phase=row["phase"], seeds=row["seeds"]) for row in rows]
    parts = [
        "## " + title,
        markdown_table(columns, cells),
        "Mask AP (%) after each phase, mean ± sample standard deviation (ddof = 1) over the seeds "
        "that finished the phase; AP old / new / all: classes of earlier phases / of this phase / "
        "all seen so far; {} = undefined or not finished.".format(UNDEFINED),
    ]
    sources = OrderedDict()  # variant -> per seed, "earlier table" if any phase came from it
    for row in rows:
        merged = sources.setdefault(row["variant"], [None] * len(row["sources"]))
        for seed, source in enumerate(row["sources"]):
            merged[seed] = merged[seed] or (source if source == "earlier table" else None)
    note = _earlier_runs_note(sources, earlier_table, "variant", "Run i is the variant's i-th experiment folder "
                              "(seed i with ablations.sh --seeds).")
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def plot_ablations(rows, path, title):
    """Three panels (old, new, all classes): mask AP against the phase, a line per variant with
    the spread over the seeds as error bars (the paper's Figures 7-8)."""
    figure = Figure(figsize=(12, 4))
    panels = figure.subplots(1, 3, sharey=True)
    variants = list(OrderedDict((row["variant"], None) for row in rows))
    for axes, name in zip(panels, GROUP_NAMES):
        for variant in variants:
            own = [row for row in rows if row["variant"] == variant and row["seeds"] > 0]
            axes.errorbar([row["phase"] for row in own], [_plot_value(row["AP " + name]) for row in own],
                          yerr=[row["std"]["AP " + name] or 0.0 for row in own], marker="o", capsize=3,
                          label=variant)
        axes.set_title("{} classes".format(name))
        axes.set_xlabel("phase")
        axes.set_xticks(sorted({row["phase"] for row in rows}))
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("mask AP (%)")
    panels[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(title)
    _save_figure(figure, path)


def write_ablation_report(runs, output_dir, title="Ablations", earlier_table=None):
    """Write output_dir/ablations.md, ablations.json and ablations_ap_per_phase.png from
    :func:`ablation_rows` of ``runs`` (and of ``earlier_table``, an ablations.json written before,
    for the runs not finished here); return the markdown."""
    rows = ablation_rows(runs, load_earlier_ablations(earlier_table) if earlier_table else None)
    markdown = ablation_markdown(rows, title, earlier_table)
    atomic_write_text(os.path.join(output_dir, "ablations.md"), markdown)
    atomic_write_json({"title": title, "columns": ABLATION_METRICS, "std": "sample, ddof=1",
                       "earlier_table": earlier_table,
                       "runs": [{"variant": label, "experiments": list(dirs)} for label, dirs in runs],
                       "rows": rows}, os.path.join(output_dir, "ablations.json"))
    plot_ablations(rows, os.path.join(output_dir, "ablations_ap_per_phase.png"), title)
    return markdown


# ---------------------------------------------------------------------------------------------
# New-class AP with and without the meta weight generator (paper Figure 9)
# ---------------------------------------------------------------------------------------------

FEW_SHOT_MAX_INSTANCES = 5  # "few-shot" new classes: fewer than this many training instances
MWG_RUNS = ("with MWG", "without MWG")


def phase_train_json(phases_dir, phase):
    """The training json of phase_<t>/config.yml (DATASETS.TRAIN), or None without config.yml."""
    # Imported here: the phase configs pull in the model code, which the other reports do not need.
    from maskrcnn_benchmark.lst.phase_config import load_yaml_config, train_annotation_file

    config_file = Experiment(phases_dir).phase(phase).config
    if not os.path.isfile(config_file):
        return None
    return train_annotation_file(load_yaml_config(config_file))


def few_shot_ap(metrics, category_ids, instance_counts, path, max_instances=FEW_SHOT_MAX_INSTANCES):
    """(AP in percent, one decimal, or None; number of classes) of the ``category_ids`` with fewer
    than ``max_instances`` training instances: the mean of their per_category_AP entries that
    are defined (>= 0). The AP is None when none is, or when metrics has no per_category_AP."""
    few_shot = [c for c in category_ids if instance_counts.get(c, 0) < max_instances]
    per_category = metrics.get("segm", {}).get("per_category_AP")
    if per_category is None:
        return None, len(few_shot)
    if not isinstance(per_category, dict):
        raise ReportInputError("metrics file {}: \"segm\".\"per_category_AP\" is not an object".format(path))
    values = [per_category.get(str(c)) for c in few_shot]
    defined = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v) and v >= 0]
    if not defined:
        return None, len(few_shot)
    return round(100.0 * sum(defined) / len(defined), 1), len(few_shot)


def mwg_phase_rows(phases_dir, phases=None, train_json=None):
    """Per phase t >= 1 up to the first one without metrics: the mask AP of its new classes and of
    its new classes with fewer than FEW_SHOT_MAX_INSTANCES training instances.

    Arguments:
        train_json (str, optional): training json for the instance counts; default: the
            DATASETS.TRAIN of the first phase_<t>/config.yml found. Without one the few-shot
            values are None.

    Returns:
        list[OrderedDict]: "phase", "#new classes", "metrics_file" (None: not finished),
        "AP new", "AP new <5" (percent or None), "#new <5" (None without instance counts).
    """
    phases = phases if phases is not None else Experiment(phases_dir).load_phases()
    if train_json is None:
        train_json = next(filter(None, (phase_train_json(phases_dir, t) for t in range(len(phases["groups"])))),
                          None)
    if train_json is not None and not os.path.isfile(train_json):
        raise ReportInputError(
            "training json {} (for the instance counts of the few-shot classes) does not exist; pass "
            "--train-json PATH, relative to the folder you run from".format(train_json))
    instance_counts = training_instance_counts(train_json) if train_json else None
    rows = []
    for phase in range(1, len(phases["groups"])):
        new_ids = phases["groups"][phase]
        metrics_file = phase_metrics_file(phases_dir, phase)
        row = OrderedDict([("phase", phase), ("#new classes", len(new_ids)), ("metrics_file", metrics_file),
                           ("AP new", None), ("AP new <5", None), ("#new <5", None)])
        rows.append(row)
        if metrics_file is None:
            break
        metrics = load_metrics(metrics_file)
        row["AP new"] = _metric_value(metrics, ("segm", "groups", "new"), metrics_file)
        if instance_counts is not None:
            row["AP new <5"], row["#new <5"] = few_shot_ap(metrics, new_ids, instance_counts, metrics_file)
    return rows


def mwg_markdown(rows_with, rows_without):
    """The Figure 9 table: one row per phase, the two runs side by side."""
    columns = ["phase", "#new classes", "#new <5", "AP new, with MWG", "AP new, without MWG",
               "AP new <5, with MWG", "AP new <5, without MWG"]
    by_phase = OrderedDict()
    for run, rows in zip(MWG_RUNS, (rows_with, rows_without)):
        for row in rows:
            entry = by_phase.setdefault(row["phase"], {"phase": row["phase"], "#new classes": row["#new classes"]})
            if row["#new <5"] is not None:
                entry["#new <5"] = row["#new <5"]
            status = "not finished" if row["metrics_file"] is None else None
            entry["AP new, " + run] = status or row["AP new"]
            entry["AP new <5, " + run] = status or row["AP new <5"]
    return "\n\n".join([
        "## New-class mask AP per phase, with and without the meta weight generator",
        markdown_table(columns, list(by_phase.values())),
        "Mask AP (%) of the classes added in each phase; \"<5\": those with fewer than {} training "
        "instances (mean of their per-category APs that are defined); {} = undefined.".format(
            FEW_SHOT_MAX_INSTANCES, UNDEFINED),
    ]) + "\n"


def plot_mwg_new_class_ap(rows_with, rows_without, path):
    """Two panels against the phase: AP of the new classes, and of the new classes with fewer
    than FEW_SHOT_MAX_INSTANCES training instances; with MWG solid, without dashed."""
    figure = Figure(figsize=(11, 4.5))
    panels = figure.subplots(1, 2)
    for axes, key, title in zip(panels, ("AP new", "AP new <5"), (
            "new classes", "new classes with < {} training instances".format(FEW_SHOT_MAX_INSTANCES))):
        for run, rows, style in zip(MWG_RUNS, (rows_with, rows_without), ("-", "--")):
            finished = [row for row in rows if row["metrics_file"] is not None]
            axes.plot([row["phase"] for row in finished], [_plot_value(row[key]) for row in finished],
                      linestyle=style, marker="o", label=run)
        phases = sorted({row["phase"] for row in rows_with + rows_without})
        axes.set_xticks(phases)
        axes.set_xlabel("phase")
        axes.set_ylabel("mask AP (%)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    _save_figure(figure, path)


def write_mwg_report(with_mwg_dir, without_mwg_dir, output_dir=None, train_json=None):
    """Write output_dir/mwg_new_class_ap.{md,json,png} (default output_dir: with_mwg_dir/report).

    Both experiments must divide the classes alike (same phases.json groups). Returns the markdown.
    """
    phases = [Experiment(d).load_phases() for d in (with_mwg_dir, without_mwg_dir)]
    if phases[0]["groups"] != phases[1]["groups"]:
        raise ReportInputError(
            "{} and {} divide the classes differently (phases.json groups differ); compare runs of the "
            "same division".format(with_mwg_dir, without_mwg_dir))
    rows_with = mwg_phase_rows(with_mwg_dir, phases[0], train_json)
    rows_without = mwg_phase_rows(without_mwg_dir, phases[1], train_json)
    markdown = mwg_markdown(rows_with, rows_without)
    output_dir = output_dir or Experiment(with_mwg_dir).report_dir
    atomic_write_text(os.path.join(output_dir, "mwg_new_class_ap.md"), markdown)
    atomic_write_json({"with_mwg": {"phases_dir": with_mwg_dir, "rows": rows_with},
                       "without_mwg": {"phases_dir": without_mwg_dir, "rows": rows_without},
                       "few_shot_max_instances": FEW_SHOT_MAX_INSTANCES},
                      os.path.join(output_dir, "mwg_new_class_ap.json"))
    plot_mwg_new_class_ap(rows_with, rows_without, os.path.join(output_dir, "mwg_new_class_ap.png"))
    return markdown
