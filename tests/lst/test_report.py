"""maskrcnn_benchmark.lst.report and tools/lst_report.py: Table 1 and the LST phase report from
hand-made metrics.json files (values, undefined cells, missing runs, plots, errors, the CLI)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.report import (
    PHASE_COLUMNS,
    TABLE1_COLUMNS,
    ReportInputError,
    earlier_row,
    phase_rows,
    write_ablation_report,
    write_phase_report,
    write_table1,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_LABELS = ["(0,1]", "(0,5)", "(0,10)", "[10,100)", "[100,1000)", "[1000,-)"]


def make_metrics(seed, bins=True, groups=None, undefined=()):
    """A metrics.json dict with distinct values derived from ``seed``; keys in ``undefined`` are -1
    (a bin label for a bin; "APr" etc. for a summary key)."""
    def value(k):
        return (seed * 0.1 + k * 0.0123456) % 1.0

    def entry(offset):
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300"]
        result = {key: (-1.0 if key in undefined else value(offset + k)) for k, key in enumerate(keys)}
        if bins:
            result["bins"] = {label: (-1.0 if label in undefined else value(offset + 20 + k))
                              for k, label in enumerate(BIN_LABELS)}
        if groups is not None:
            result["groups"] = dict(groups)
        result["per_category_AP"] = {"1": value(offset + 40), "2": value(offset + 41)}
        return result

    return {"bbox": entry(100), "segm": entry(0)}


def expected_cell(value):
    return "{:.1f}".format(round(value * 100, 1))


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def markdown_rows(markdown):
    """Cells of the table rows (not the header or the separator) of a markdown text."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def check_png(path):
    assert os.path.isfile(path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 100 and height > 100
        image.load()  # decodes the whole file: a truncated png fails here


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "lst_report.py"),
                           *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------

def table1_values(metrics):
    segm, bbox = metrics["segm"], metrics["bbox"]
    return ([segm["bins"][label] for label in BIN_LABELS]
            + [segm["AP"], segm["AP50"], segm["AP75"], bbox["AP"], segm["APr"], segm["APc"],
               segm["APf"]])


def test_table1_values_are_percent_with_one_decimal(tmp_path):
    metrics_a, metrics_b = make_metrics(1), make_metrics(2)
    entries = [("Baseline (Mask R-CNN)", write_json(tmp_path / "a" / "metrics.json", metrics_a)),
               ("LST w MWG", write_json(tmp_path / "b" / "metrics.json", metrics_b))]
    markdown = write_table1(entries, str(tmp_path / "report"), title="My table", note="a note")

    with open(tmp_path / "report" / "table1.md") as f:
        assert f.read() == markdown
    assert "## My table" in markdown and "a note" in markdown
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == TABLE1_COLUMNS
    assert TABLE1_COLUMNS == ["model", "AP(0,1]", "AP(0,5)", "AP(0,10)", "AP[10,100)",
                              "AP[100,1000)", "AP[1000,-)", "AP", "AP50", "AP75", "AP^bb",
                              "APr", "APc", "APf"]
    rows = markdown_rows(markdown)
    for (model, metrics), cells in zip([("Baseline (Mask R-CNN)", metrics_a),
                                        ("LST w MWG", metrics_b)], rows):
        assert cells == [model] + [expected_cell(v) for v in table1_values(metrics)]

    with open(tmp_path / "report" / "table1.json") as f:
        table = json.load(f)
    assert table["title"] == "My table" and table["columns"] == TABLE1_COLUMNS
    for (model, path), metrics, row in zip(entries, [metrics_a, metrics_b], table["rows"]):
        assert row["model"] == model and row["metrics_files"] == [path]
        assert [row[c] for c in TABLE1_COLUMNS[1:]] == [round(v * 100, 1)
                                                        for v in table1_values(metrics)]
    check_png(tmp_path / "report" / "table1_ap_per_bin.png")


def test_table1_missing_run_and_undefined_values(tmp_path):
    nan_bins = make_metrics(3, undefined=("(0,1]", "APr"))
    nan_bins["segm"]["bins"]["(0,5)"] = float("nan")  # json.dump writes NaN, json.load reads it
    del nan_bins["segm"]["APf"]
    no_bins = make_metrics(4, bins=False)
    entries = [("Undefined", write_json(tmp_path / "u.json", nan_bins)),
               ("Not yet", str(tmp_path / "missing" / "metrics.json")),
               ("No bins", write_json(tmp_path / "n.json", no_bins))]
    markdown = write_table1(entries, str(tmp_path / "report"))
    undefined_row, missing_row, no_bins_row = markdown_rows(markdown)

    column = {name: k for k, name in enumerate(TABLE1_COLUMNS)}
    for name in ("AP(0,1]", "AP(0,5)", "APr", "APf"):
        assert undefined_row[column[name]] == "–"
    assert undefined_row[column["AP(0,10)"]] == expected_cell(nan_bins["segm"]["bins"]["(0,10)"])
    assert missing_row[0] == "Not yet" and "not run" in missing_row
    assert all(cell in ("not run", "–") for cell in missing_row[1:])
    assert no_bins_row[column["AP(0,1]"]:column["AP"]] == ["–"] * 6
    assert no_bins_row[column["AP"]] == expected_cell(no_bins["segm"]["AP"])

    with open(tmp_path / "report" / "table1.json") as f:
        rows = json.load(f)["rows"]
    assert [row["status"] for row in rows] == ["ok", "not run", "ok"]
    assert rows[0]["AP(0,1]"] is None and rows[0]["AP(0,5)"] is None and rows[0]["APf"] is None
    assert all(rows[1][c] is None for c in TABLE1_COLUMNS[1:])
    check_png(tmp_path / "report" / "table1_ap_per_bin.png")


def write_seed_runs(tmp_path, name, seeds):
    """One metrics.json per seed (values derived from the seed); returns (paths, metrics dicts)."""
    metrics = [make_metrics(seed) for seed in seeds]
    paths = [write_json(tmp_path / name / "seed{}".format(seed) / "metrics.json", m) for seed, m in zip(seeds, metrics)]
    return paths, metrics


def test_table1_of_several_seeds_gives_mean_std_and_paired_differences(tmp_path):
    """Mean, sample std (ddof = 1) and the per-seed differences of two rows, against numpy on the
    metrics files' values (percent)."""
    paths_a, metrics_a = write_seed_runs(tmp_path, "a", [1, 2, 3])
    paths_b, metrics_b = write_seed_runs(tmp_path, "b", [7, 4, 9])
    entries = [("LST w/o MWG", paths_a), ("Repeat-factor sampling", paths_b)]
    markdown = write_table1(entries, str(tmp_path / "report"), pairs=[("LST w/o MWG", "Repeat-factor sampling")])
    with open(tmp_path / "report" / "table1.json") as f:
        table = json.load(f)
    values_a = 100 * np.array([table1_values(m) for m in metrics_a])  # seeds x columns
    values_b = 100 * np.array([table1_values(m) for m in metrics_b])
    for row, values in zip(table["rows"], (values_a, values_b)):
        assert row["status"] == "ok" and row["runs"] == 3
        for column, name in enumerate(TABLE1_COLUMNS[1:]):
            assert row[name] == pytest.approx(values[:, column].mean(), abs=0.05 + 1e-9)
            assert row["std"][name] == pytest.approx(values[:, column].std(ddof=1), abs=0.005 + 1e-9)
            assert row["per_seed"][name] == pytest.approx(values[:, column], abs=0.05 + 1e-9)
    (paired,) = table["paired"]
    assert paired["comparison"] == "LST w/o MWG − Repeat-factor sampling"
    differences = values_a - values_b
    for column, name in enumerate(TABLE1_COLUMNS[1:]):
        assert paired["n"][name] == 3
        assert paired[name] == pytest.approx(differences[:, column].mean(), abs=0.005 + 1e-9)
        assert paired["std"][name] == pytest.approx(differences[:, column].std(ddof=1), abs=0.005 + 1e-9)
        assert paired["per_seed"][name] == pytest.approx(differences[:, column], abs=0.005 + 1e-9)

    table_part, paired_part = markdown.split("### Paired differences over the same seeds")
    rows = markdown_rows(table_part)
    assert rows[0][0] == "LST w/o MWG (3 seeds)"
    column = TABLE1_COLUMNS.index("AP(0,10)")
    assert rows[0][column] == "{:.1f} ± {:.1f}".format(values_a[:, column - 1].mean(), values_a[:, column - 1].std(ddof=1))
    assert "ddof = 1" in table_part and "ddof = 1" in paired_part
    (paired_cells,) = markdown_rows(paired_part)
    assert paired_cells[0] == "LST w/o MWG − Repeat-factor sampling (n = 3)"
    assert paired_cells[column] == "{:.2f} ± {:.2f}".format(differences[:, column - 1].mean(),
                                                       differences[:, column - 1].std(ddof=1))
    check_png(tmp_path / "report" / "table1_ap_per_bin.png")


def test_table1_seeds_not_run_yet_and_bad_pairs(tmp_path):
    paths, metrics = write_seed_runs(tmp_path, "a", [1, 2])
    later = str(tmp_path / "a" / "seed3" / "metrics.json")
    entries = [("Partial", paths + [later]), ("Single", [paths[0]])]
    markdown = write_table1(entries, str(tmp_path / "report"))
    partial_row = json.load(open(tmp_path / "report" / "table1.json"))["rows"][0]
    assert partial_row["status"] == "partial" and partial_row["runs"] == 2
    assert partial_row["per_seed"]["AP"][2] is None
    assert partial_row["AP"] == pytest.approx(100 * np.mean([m["segm"]["AP"] for m in metrics]), abs=0.05 + 1e-9)
    assert markdown_rows(markdown)[0][0] == "Partial (2 of 3 seeds)"
    with pytest.raises(ReportInputError, match="no row is named 'Nope'"):
        write_table1(entries, str(tmp_path / "report"), pairs=[("Partial", "Nope")])
    with pytest.raises(ReportInputError, match="3 and 1 metrics files"):
        write_table1(entries, str(tmp_path / "report"), pairs=[("Partial", "Single")])


def test_table1_takes_the_runs_not_here_from_an_earlier_table(tmp_path):
    """Seeds 0-1 of a table written on another machine (their metrics files are not here) and
    seed 2 run here: mean, std and paired differences over the three, against numpy; the runs
    found in neither stay missing, and the table says which runs came from where."""
    metrics = {"A": [make_metrics(seed) for seed in (1, 2, 3)], "B": [make_metrics(seed) for seed in (7, 4, 9)]}
    elsewhere = tmp_path / "elsewhere"
    earlier_entries = [(name, [write_json(elsewhere / name / "seed{}".format(seed) / "metrics.json", runs[seed])
                               for seed in (0, 1)] + [str(elsewhere / name / "seed2" / "metrics.json")])
                       for name, runs in metrics.items()]
    write_table1(earlier_entries, str(tmp_path / "earlier"))
    earlier_table = str(tmp_path / "earlier" / "table1.json")

    here = {name: [str(tmp_path / "here" / name / "seed{}".format(seed) / "metrics.json") for seed in (0, 1)]
            + [write_json(tmp_path / "here" / name / "seed2" / "metrics.json", runs[2])]
            for name, runs in metrics.items()}
    entries = [("A", here["A"]), ("B", here["B"]), ("C", [str(tmp_path / "none{}.json".format(s)) for s in range(3)])]
    markdown = write_table1(entries, str(tmp_path / "report"), pairs=[("A", "B")], earlier_table=earlier_table)
    with open(tmp_path / "report" / "table1.json") as f:
        table = json.load(f)
    assert table["earlier_table"] == earlier_table
    # the earlier table keeps one decimal: its runs enter with that rounding
    values = {name: np.array([[round(100 * v, 1) for v in table1_values(m)] for m in runs[:2]]
                             + [[100 * v for v in table1_values(runs[2])]])
              for name, runs in metrics.items()}
    row_a, row_b, row_c = table["rows"]
    for row, name in ((row_a, "A"), (row_b, "B")):
        assert row["status"] == "ok" and row["runs"] == 3
        assert row["sources"] == ["earlier table", "earlier table", "file"]
        for column, column_name in enumerate(TABLE1_COLUMNS[1:]):
            assert row[column_name] == pytest.approx(values[name][:, column].mean(), abs=0.05 + 1e-9)
            assert row["std"][column_name] == pytest.approx(values[name][:, column].std(ddof=1), abs=0.005 + 1e-9)
    assert row_c["status"] == "not run" and row_c["sources"] == [None, None, None]
    differences = values["A"] - values["B"]
    (paired,) = table["paired"]
    for column, column_name in enumerate(TABLE1_COLUMNS[1:]):
        assert paired["n"][column_name] == 3
        assert paired[column_name] == pytest.approx(differences[:, column].mean(), abs=0.005 + 1e-9)
    assert "From the earlier table {}".format(earlier_table) in markdown
    assert "runs 0, 1 of A, B" in markdown  # not "every row": C has none


def test_table1_refuses_an_earlier_table_it_cannot_read(tmp_path):
    entries = [("A", [str(tmp_path / "missing.json")])]
    for content, problem in (("{oops", "not valid JSON"), (json.dumps({"rows": [{"model": "A"}]}), "per_seed")):
        path = tmp_path / "earlier.json"
        path.write_text(content)
        with pytest.raises(ReportInputError, match=problem) as error:
            write_table1(entries, str(tmp_path / "report"), earlier_table=str(path))
        assert str(path) in str(error.value)
    with pytest.raises(ReportInputError, match="cannot be read"):
        write_table1(entries, str(tmp_path / "report"), earlier_table=str(tmp_path / "nowhere.json"))


def test_table1_gains_fixed_ap_columns_when_a_run_has_fixed_ap(tmp_path):
    with_fixed = make_metrics(5)
    # Fixed AP as the LVIS evaluator writes it: the same keys, bins included, under "fixed_AP"
    with_fixed["segm"]["fixed_AP"] = make_metrics(6)["segm"]
    with_fixed["segm"]["fixed_AP"]["APr"] = -1.0  # no rare category with ground truth
    without = make_metrics(7)
    entries = [("Fixed", write_json(tmp_path / "f.json", with_fixed)),
               ("Standard only", write_json(tmp_path / "s.json", without)),
               ("Not yet", str(tmp_path / "missing.json"))]
    markdown = write_table1(entries, str(tmp_path / "report"))
    columns = TABLE1_COLUMNS + ["Fixed AP", "Fixed AP(0,10)", "Fixed APr"]
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == columns
    assert "Dave et al. 2021" in markdown
    fixed_row, standard_row, missing_row = markdown_rows(markdown)
    fixed = with_fixed["segm"]["fixed_AP"]
    assert fixed_row == (["Fixed"] + [expected_cell(v) for v in table1_values(with_fixed)]
                         + [expected_cell(fixed["AP"]), expected_cell(fixed["bins"]["(0,10)"]),
                            "–"])
    assert standard_row == (["Standard only"] + [expected_cell(v) for v in table1_values(without)]
                            + ["–"] * 3)
    assert missing_row[-3:] == ["–"] * 3
    with open(tmp_path / "report" / "table1.json") as f:
        table = json.load(f)
    assert table["columns"] == columns
    assert [table["rows"][0][c] for c in columns[-3:]] == [
        round(fixed["AP"] * 100, 1), round(fixed["bins"]["(0,10)"] * 100, 1), None]
    assert all(row[c] is None for row in table["rows"][1:] for c in columns[-3:])

    with_fixed["segm"]["fixed_AP"] = 0.3
    with pytest.raises(ReportInputError, match='"segm"."fixed_AP" is not an object'):
        write_table1([("Bad", write_json(tmp_path / "bad.json", with_fixed))],
                     str(tmp_path / "report"))


def test_table1_takes_fixed_ap_from_a_separate_evaluation_of_the_same_model(tmp_path):
    """table1.sh evaluates each model a second time for Fixed AP: the row's standard columns come
    from the training run's metrics.json, its Fixed AP columns from the second evaluation's."""
    runs, fixed = [make_metrics(seed) for seed in (1, 2)], [make_metrics(seed) for seed in (3, 4)]
    for seed, metrics in enumerate(fixed):
        metrics["segm"]["fixed_AP"] = make_metrics(10 + seed)["segm"]
    files = [write_json(tmp_path / "run{}".format(seed) / "metrics.json", m) for seed, m in enumerate(runs)]
    fixed_files = [write_json(tmp_path / "run{}".format(seed) / "fixed_ap" / "metrics.json", m)
                   for seed, m in enumerate(fixed)]
    entries = [("Row", files), ("Other", [files[0], str(tmp_path / "missing.json")])]
    write_table1(entries, str(tmp_path / "report"),
                 fixed_ap=[("Row", fixed_files), ("Other", [str(tmp_path / "none.json")] * 2)])
    with open(tmp_path / "report" / "table1.json") as f:
        table = json.load(f)
    assert table["columns"] == TABLE1_COLUMNS + ["Fixed AP", "Fixed AP(0,10)", "Fixed APr"]
    row, other = table["rows"]
    standard = 100 * np.array([table1_values(m) for m in runs])
    for column, name in enumerate(TABLE1_COLUMNS[1:]):  # not the second evaluation's standard AP
        assert row[name] == pytest.approx(standard[:, column].mean(), abs=0.05 + 1e-9)
    for name, key in (("Fixed AP", ("AP",)), ("Fixed AP(0,10)", ("bins", "(0,10)")), ("Fixed APr", ("APr",))):
        per_seed = [100 * (m["segm"]["fixed_AP"][key[0]] if len(key) == 1 else m["segm"]["fixed_AP"][key[0]][key[1]])
                    for m in fixed]
        assert row["per_seed"][name] == pytest.approx(per_seed, abs=0.05 + 1e-9)
        assert row[name] == pytest.approx(np.mean(per_seed), abs=0.05 + 1e-9)
        assert other[name] is None
    # Fixed AP of one of two seeds: the cell says it rests on one run
    markdown = write_table1(entries, str(tmp_path / "report"),
                            fixed_ap=[("Row", [fixed_files[0], str(tmp_path / "none.json")])])
    cells = markdown_rows(markdown)[0]
    assert cells[0] == "Row (2 seeds)"
    assert cells[-3] == "{:.1f} (n = 1)".format(round(100 * fixed[0]["segm"]["fixed_AP"]["AP"], 1))
    assert cells[TABLE1_COLUMNS.index("AP")] == "{:.1f} ± {:.1f}".format(
        standard[:, TABLE1_COLUMNS.index("AP") - 1].mean(), standard[:, TABLE1_COLUMNS.index("AP") - 1].std(ddof=1))
    with pytest.raises(ReportInputError, match="Fixed AP of 'Nope': no row is named so"):
        write_table1(entries, str(tmp_path / "report"), fixed_ap=[("Nope", fixed_files)])


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({"bbox": {"AP": 0.5}}), "segm"),
    (json.dumps({"segm": {"AP": "high"}}), "not a number"),
])
def test_table1_malformed_metrics_names_the_file(tmp_path, content, problem):
    path = tmp_path / "bad" / "metrics.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ReportInputError, match=problem) as error:
        write_table1([("Bad", str(path))], str(tmp_path / "report"))
    assert str(path) in str(error.value)


# ---------------------------------------------------------------------------------------------
# Phase report
# ---------------------------------------------------------------------------------------------

GROUPS = [[5, 1, 2], [3, 4], [6, 7], [8]]  # base 3, phase size 2 (the last group is smaller)


def make_phases_dir(root, finished, groups_ap=None):
    """An LST experiment folder with phases.json and metrics for the phases in ``finished``.

    Returns {phase: metrics dict}; the groups of phase t are {"all": ...} at phase 0 and
    {"old", "new", "all"} after, with values from ``groups_ap`` (phase -> dict) or made up.
    """
    write_json(os.path.join(root, "phases.json"), {
        "sorted_category_ids": [c for group in GROUPS for c in group],
        "groups": GROUPS, "base": 3, "phase_size": 2})
    written = {}
    for phase in finished:
        if groups_ap and phase in groups_ap:
            groups = groups_ap[phase]
        elif phase == 0:
            groups = {"all": 0.31 + 0.01 * phase}
        else:
            groups = {"old": 0.2 + 0.01 * phase, "new": 0.05 * phase, "all": 0.25 + 0.003 * phase}
        written[phase] = make_metrics(10 + phase, groups=groups)
        write_json(os.path.join(root, "phase_{}".format(phase), "inference", "lvis_val",
                                "metrics.json"), written[phase])
    return written


def phase_values(metrics):
    groups = metrics["segm"]["groups"]
    return table1_values(metrics) + [groups.get(name, -1.0) for name in ("old", "new", "all")]


def test_phase_report_stops_at_first_unfinished_phase(tmp_path):
    root = str(tmp_path / "lst")
    written = make_phases_dir(root, finished=[0, 1, 3])  # phase 2 unfinished, 3 must be ignored
    os.makedirs(os.path.join(root, "phase_2", "inference", "lvis_val"))  # evaluation under way
    markdown = write_phase_report(root)

    report = os.path.join(root, "report")
    with open(os.path.join(report, "table.md")) as f:
        assert f.read() == markdown
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == PHASE_COLUMNS
    rows = markdown_rows(markdown)
    assert [row[0] for row in rows] == ["0", "1", "2"]
    assert [row[1] for row in rows] == ["3", "5", "7"]  # classes seen: 3, 3 + 2, 3 + 2 + 2
    for phase in (0, 1):
        assert rows[phase][2:] == [expected_cell(v) if v >= 0 else "–"
                                   for v in phase_values(written[phase])]
    assert rows[0][-3:] == ["–", "–", expected_cell(written[0]["segm"]["groups"]["all"])]
    assert "not finished" in rows[2]

    with open(os.path.join(report, "table.json")) as f:
        table = json.load(f)
    assert table["columns"] == PHASE_COLUMNS
    assert [row["status"] for row in table["rows"]] == ["finished", "finished", "not finished"]
    groups_1 = written[1]["segm"]["groups"]
    assert [table["rows"][1]["AP " + name] for name in ("old", "new", "all")] == [
        round(groups_1[name] * 100, 1) for name in ("old", "new", "all")]
    assert table["rows"][0]["AP old"] is None and table["rows"][0]["AP new"] is None
    check_png(os.path.join(report, "ap_per_phase.png"))
    check_png(os.path.join(report, "ap_per_bin.png"))


def test_phase_old_new_all_come_from_groups_not_summary(tmp_path):
    root = str(tmp_path / "lst")
    groups_ap = {0: {"all": 0.123}, 1: {"old": 0.456, "new": float("nan"), "all": 0.789}}
    written = make_phases_dir(root, finished=[0, 1, 2, 3], groups_ap=groups_ap)
    rows = phase_rows(root)
    assert [row["status"] for row in rows] == ["finished"] * 4
    assert rows[0]["AP all"] == 12.3 and rows[0]["AP"] == round(written[0]["segm"]["AP"] * 100, 1)
    assert (rows[1]["AP old"], rows[1]["AP new"], rows[1]["AP all"]) == (45.6, None, 78.9)
    assert rows[3]["#classes"] == 8


def test_phase_report_with_comparison_and_errors(tmp_path):
    root, other = str(tmp_path / "lst"), str(tmp_path / "no_kd")
    make_phases_dir(root, finished=[0, 1, 2])
    make_phases_dir(other, finished=[0, 1])
    write_phase_report(root, comparisons=[("no KD", other)])
    check_png(os.path.join(root, "report", "ap_per_phase.png"))

    with pytest.raises(ValueError, match="phases.json"):
        write_phase_report(str(tmp_path / "empty"))
    bad = os.path.join(root, "phase_1", "inference", "lvis_val", "metrics.json")
    with open(bad, "w") as f:
        json.dump({"bbox": {}}, f)
    with pytest.raises(ReportInputError, match="segm") as error:
        write_phase_report(root)
    assert bad in str(error.value)


def test_an_experiment_is_complete_once_its_report_follows_the_last_evaluation(tmp_path):
    root = str(tmp_path / "lst")
    experiment = Experiment(root)
    make_phases_dir(root, finished=[0, 1, 2])
    write_phase_report(root)
    assert not experiment.complete  # phase 3 not evaluated
    make_phases_dir(root, finished=[3])
    evaluated = os.path.getmtime(experiment.final_metrics_file)
    for name in os.listdir(os.path.join(root, "report")):
        os.utime(os.path.join(root, "report", name), (evaluated - 1, evaluated - 1))
    assert not experiment.complete  # evaluated after the report was written
    write_phase_report(root)
    assert experiment.complete

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    tool = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "lst_experiment.py"), root, "complete"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert tool.returncode == 0 and tool.stdout.strip() == "complete", tool.stderr
    os.remove(os.path.join(root, "report", "ap_per_bin.png"))  # a report interrupted before its last plot
    assert not experiment.complete


def test_ablation_report_gives_each_variant_and_phase_mean_and_std_over_its_seeds(tmp_path):
    runs = []
    for name, offset in (("default", 0.0), ("KD off", -0.1)):
        dirs = [str(tmp_path / "{}_seed{}".format(name, seed)) for seed in (0, 1)]
        for seed, root in enumerate(dirs):
            finished = [0, 1, 2] if (name, seed) != ("KD off", 1) else [0, 1]  # seed 1 stopped in phase 2
            make_phases_dir(root, finished, groups_ap={
                0: {"all": 0.5 + 0.01 * seed},
                1: {"old": 0.4 + offset + 0.02 * seed, "new": 0.3 + 0.03 * seed, "all": 0.35 + offset},
                2: {"old": 0.45 + offset - 0.04 * seed, "new": 0.1, "all": 0.3 + offset + 0.01 * seed}})
        runs.append((name, dirs))
    runs.append(("not run", [str(tmp_path / "missing_seed0"), str(tmp_path / "missing_seed1")]))
    markdown = write_ablation_report(runs, str(tmp_path / "report"), "Ablations")

    with open(tmp_path / "report" / "ablations.json") as f:
        rows = {(row["variant"], row["phase"]): row for row in json.load(f)["rows"]}
    assert sorted(rows) == sorted((name, phase) for name in ("default", "KD off", "not run") for phase in range(len(GROUPS)))
    assert rows[("default", 3)]["seeds"] == 0  # no run reached phase 3
    row = rows[("KD off", 1)]
    assert row["seeds"] == 2 and row["AP old"] == pytest.approx(100 * np.mean([0.3, 0.32]), abs=0.05)
    assert row["std"]["AP old"] == pytest.approx(100 * np.std([0.3, 0.32], ddof=1), abs=0.005)
    assert row["AP new"] == pytest.approx(31.5, abs=0.05) and row["per_seed"]["AP new"] == [30.0, 33.0]
    last = rows[("KD off", 2)]  # only seed 0 finished phase 2: its value, no spread
    assert last["seeds"] == 1 and last["AP old"] == 35.0 and last["std"]["AP old"] is None
    assert last["per_seed"]["AP old"] == [35.0, None]
    assert rows[("default", 0)]["AP old"] is None and rows[("default", 0)]["AP all"] == pytest.approx(50.5, abs=0.05)
    assert rows[("not run", 2)]["seeds"] == 0 and rows[("not run", 2)]["AP all"] is None
    assert "| KD off | 1 | 2 | 31.0 ± 1.4 | 31.5 ± 2.1 | 25.0 ± 0.0 |" in markdown
    check_png(str(tmp_path / "report" / "ablations_ap_per_phase.png"))

    other = str(tmp_path / "other_division")
    other_groups = [[5, 1], [2, 3], [4, 6], [7, 8]]  # base 2: another division of the same classes
    write_json(os.path.join(other, "phases.json"), {
        "sorted_category_ids": [c for group in other_groups for c in group], "groups": other_groups, "base": 2,
        "phase_size": 2})
    with pytest.raises(ReportInputError, match="divides the classes differently"):
        write_ablation_report(runs[:1] + [("other", [other])], str(tmp_path / "report2"))


def test_ablation_report_takes_the_runs_not_here_from_an_earlier_table(tmp_path):
    """Seeds 0-1 of every variant reported on another machine, seed 2 run here; then a machine
    with no run at all: the mean and std over the three against numpy (the earlier values with
    one decimal), and the phases known from the earlier table alone."""
    def groups_ap(variant, seed):
        return {0: {"all": 0.5 + 0.013 * seed},
                1: {"old": 0.4 - 0.1 * variant + 0.021 * seed, "new": 0.3 + 0.037 * seed, "all": 0.35 + 0.011 * seed},
                2: {"old": 0.45 - 0.043 * seed, "new": 0.1 + 0.005 * seed, "all": 0.3 - 0.1 * variant + 0.017 * seed},
                3: {"old": 0.41 + 0.003 * seed, "new": 0.2, "all": 0.31 + 0.007 * seed}}

    def runs(root, seeds_run):
        variants = []
        for variant, name in enumerate(("default", "KD off")):
            dirs = [str(tmp_path / root / "{}_seed{}".format(name, seed)) for seed in range(3)]
            for seed in seeds_run:
                make_phases_dir(dirs[seed], range(len(GROUPS)), groups_ap(variant, seed))
            variants.append((name, dirs))
        return variants

    write_ablation_report(runs("elsewhere", (0, 1)), str(tmp_path / "earlier"))
    earlier_table = str(tmp_path / "earlier" / "ablations.json")
    markdown = write_ablation_report(runs("here", (2,)), str(tmp_path / "report"), earlier_table=earlier_table)
    with open(tmp_path / "report" / "ablations.json") as f:
        report = json.load(f)
    assert report["earlier_table"] == earlier_table
    rows = {(row["variant"], row["phase"]): row for row in report["rows"]}
    for (name, phase), row in rows.items():
        variant = ("default", "KD off").index(name)
        values = [groups_ap(variant, seed)[phase] for seed in range(3)]
        assert row["seeds"] == 3 and row["sources"] == ["earlier table", "earlier table", "file"]
        for group in ("old", "new", "all"):
            if group not in values[0]:
                assert row["AP " + group] is None
                continue
            percents = [round(100 * v[group], 1) for v in values[:2]] + [100 * values[2][group]]
            assert row["AP " + group] == pytest.approx(np.mean(percents), abs=0.05 + 1e-9)
            assert row["std"]["AP " + group] == pytest.approx(np.std(percents, ddof=1), abs=0.005 + 1e-9)
    assert "From the earlier table {}".format(earlier_table) in markdown
    assert "runs 0, 1 of every variant" in markdown

    # no run here at all (a fresh machine): the table is the earlier one
    write_ablation_report(runs("nowhere", ()), str(tmp_path / "fresh"), earlier_table=earlier_table)
    with open(tmp_path / "fresh" / "ablations.json") as f:
        fresh = json.load(f)["rows"]
    with open(earlier_table) as f:
        before = json.load(f)["rows"]
    assert [(row["variant"], row["phase"], row["seeds"], row["per_seed"]) for row in fresh] == [
        (row["variant"], row["phase"], row["seeds"], row["per_seed"]) for row in before]
    a_table1 = write_json(tmp_path / "table1.json", {"rows": [{"model": "A", "per_seed": {}}]})
    with pytest.raises(ReportInputError, match='ablations.json .* "variant" and "phase" and "per_seed"'):
        write_ablation_report(runs("nowhere", ()), str(tmp_path / "bad"), earlier_table=a_table1)


def test_table1_earlier_row_of_the_same_name_or_with_a_remark():
    earlier = {"A": {"AP": [1.0]}, "b 1, phase size 2 (phases 0-3)": {"AP": [2.0]}, "C (x)": {}, "C (y)": {}}
    assert earlier_row(earlier, "A") == {"AP": [1.0]}
    assert earlier_row(earlier, "b 1, phase size 2") == {"AP": [2.0]}  # table3.sh without the run's division
    assert earlier_row(earlier, "b 1, phase size") is None and earlier_row(earlier, "C") is None  # not one
    assert earlier_row(None, "A") is None


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_table1_and_errors(tmp_path):
    metrics = make_metrics(5)
    good = write_json(tmp_path / "run" / "metrics.json", metrics)
    result = run_cli("table1", "--row", "Baseline (Mask R-CNN)=" + good,
                     "--row", "Repeat-factor sampling=" + str(tmp_path / "later.json"),
                     "--output-dir", tmp_path / "report", "--title", "T1")
    assert result.returncode == 0, result.stderr
    rows = markdown_rows(result.stdout)
    assert rows[0] == ["Baseline (Mask R-CNN)"] + [expected_cell(v) for v in table1_values(metrics)]
    assert rows[1][0] == "Repeat-factor sampling" and "not run" in rows[1]
    for name in ("table1.md", "table1.json"):
        assert os.path.isfile(tmp_path / "report" / name)
    check_png(tmp_path / "report" / "table1_ap_per_bin.png")

    no_label = run_cli("table1", "--row", good, "--output-dir", tmp_path / "report")
    assert no_label.returncode == 2 and "LABEL=PATH" in no_label.stderr

    (tmp_path / "broken.json").write_text("[1, 2")
    broken = run_cli("table1", "--row", "X=" + str(tmp_path / "broken.json"),
                     "--output-dir", tmp_path / "report")
    assert broken.returncode != 0
    assert "broken.json" in broken.stderr and "not valid JSON" in broken.stderr

    named = run_cli("table1", "--row", "b 4, phase size 2 (1 phase)=" + good, "--output-dir",
                    tmp_path / "grid", "--name", "table3")
    assert named.returncode == 0, named.stderr
    assert markdown_rows(named.stdout)[0][0] == "b 4, phase size 2 (1 phase)"
    assert sorted(os.listdir(tmp_path / "grid")) == ["table3.json", "table3.md", "table3_ap_per_bin.png"]

    paths_a, _ = write_seed_runs(tmp_path, "a", [1, 2])
    paths_b, _ = write_seed_runs(tmp_path, "b", [3, 4])
    seeds = run_cli("table1", "--row", "A=" + ",".join(paths_a), "--row", "B=" + ",".join(paths_b),
                    "--paired", "A", "B", "--output-dir", tmp_path / "seeds")
    assert seeds.returncode == 0, seeds.stderr
    table = json.loads((tmp_path / "seeds" / "table1.json").read_text())
    assert [row["metrics_files"] for row in table["rows"]] == [paths_a, paths_b]
    assert table["paired"][0]["comparison"] == "A − B" and "± " in seeds.stdout


@pytest.mark.slow
def test_cli_phases_prints_the_table(tmp_path):
    root, other = tmp_path / "lst", tmp_path / "replay_all"
    written = make_phases_dir(str(root), finished=[0, 1])
    make_phases_dir(str(other), finished=[0, 1, 2])
    result = run_cli("phases", "--phases-dir", root, "--compare", "replay all=" + str(other))
    assert result.returncode == 0, result.stderr
    with open(root / "report" / "table.md") as f:
        assert result.stdout == f.read()
    rows = markdown_rows(result.stdout)
    assert [row[0] for row in rows] == ["0", "1", "2"] and "not finished" in rows[2]
    assert rows[1][2:] == [expected_cell(v) if not math.isnan(v) and v >= 0 else "–"
                           for v in phase_values(written[1])]
    for name in ("ap_per_phase.png", "ap_per_bin.png"):
        check_png(root / "report" / name)
