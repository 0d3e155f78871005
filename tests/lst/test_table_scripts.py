"""lst_scripts/table1.sh and ablations.sh --seeds on the tiny CPU config and the LVIS test fixture:
one run per seed and row in folders of their own, two at a time (--jobs 2), cRT from the plain run
of its seed and the ablations from the default chain's phase 0, resumed when finished, and tables
whose mean and spread are those of the per-seed metrics files."""
import contextlib
import datetime
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import yaml

from fixtures_training import REPO_ROOT, TEST_LST_CONFIGS, TINY_CONFIG, load_checkpoint, max_weight_difference

pytestmark = pytest.mark.slow

BIN_LABELS = ["(0,1]", "(0,5)", "(0,10)", "[10,100)", "[100,1000)", "[1000,-)"]


def table1_columns(metrics):
    """Table 1's columns (AP(0,1] .. APf) of a metrics.json, in percent; None where undefined."""
    segm, bbox = metrics["segm"], metrics["bbox"]
    values = ([segm["bins"][label] for label in BIN_LABELS]
              + [segm["AP"], segm["AP50"], segm["AP75"], bbox["AP"], segm["APr"], segm["APc"], segm["APf"]])
    return [100.0 * v if v >= 0 else None for v in values]


def test_table1_seeds_gives_the_mean_and_std_of_the_per_seed_runs(workspace):
    out = workspace["dir"] / "table1"
    command = ["bash", os.path.join(REPO_ROOT, "lst_scripts", "table1.sh"), "--rows", "plain,crt", "--seeds", "2",
               "--config-prefix", TINY_CONFIG[:-len(".yaml")], "--test-set", "fixture_test",
               "--output-dir", str(out / "runs"), "--report-dir", str(out / "report"),
               "PATHS_CATALOG", workspace["catalog"]]
    # seed 1 alone first (as on another machine), then both: only seed 0 is left to train
    only_seed_1 = subprocess.run(command[:2] + ["--jobs", "2", "--only-seeds", "1"] + command[2:], env=workspace["env"],
                                 capture_output=True, text=True, timeout=900)
    assert only_seed_1.returncode == 0, only_seed_1.stdout[-3000:] + only_seed_1.stderr[-3000:]
    assert "starting plain+crt_seed1" in only_seed_1.stderr and "seed0" not in only_seed_1.stderr
    assert not (out / "runs" / "plain_seed0").exists()
    assert "Baseline (Mask R-CNN) (1 of 2 seeds)" in only_seed_1.stdout
    first = subprocess.run(command[:2] + ["--jobs", "2"] + command[2:], env=workspace["env"],
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for seed in (0, 1):  # plain and the cRT run that starts from it are one job
        assert "starting plain+crt_seed{}".format(seed) in first.stderr
        assert (out / "runs" / "logs" / "plain+crt_seed{}.log".format(seed)).is_file()
    assert "plain, seed 1: done" in (out / "runs" / "logs" / "plain+crt_seed1.log").read_text()

    table = json.loads((out / "report" / "table1.json").read_text())
    assert table["std"] == "sample, ddof=1"
    for row, name in zip(table["rows"], ["plain", "crt"]):
        runs = [out / "runs" / "{}_seed{}".format(name, seed) for seed in (0, 1)]
        configs = [yaml.safe_load((run / "config.yml").read_text()) for run in runs]
        assert [config["SEED"] for config in configs] == [0, 1]
        if name == "crt":
            assert [config["MODEL"]["WEIGHT"] for config in configs] == [
                str(out / "runs" / "plain_seed{}".format(seed) / "model_final.pth") for seed in (0, 1)]
        files = [run / "inference" / "fixture_test" / "metrics.json" for run in runs]
        assert row["metrics_files"] == [str(path) for path in files]
        per_seed = [table1_columns(json.loads(path.read_text())) for path in files]
        assert per_seed[0] != per_seed[1]  # the seeds trained different models
        # Fixed AP: the same model evaluated again, without the per-image cap
        fixed_ap = [json.loads((run / "fixed_ap" / "inference" / "fixture_test" / "metrics.json").read_text())
                    ["segm"]["fixed_AP"] for run in runs]
        assert row["per_seed"]["Fixed AP"] == pytest.approx([100 * f["AP"] for f in fixed_ap], abs=0.05 + 1e-9)
        assert table["columns"][-3:] == ["Fixed AP", "Fixed AP(0,10)", "Fixed APr"]
        for column, column_name in enumerate(table["columns"][1:-3]):
            defined = [values[column] for values in per_seed if values[column] is not None]
            if not defined:
                assert row[column_name] is None and row["std"][column_name] is None
                continue
            assert row[column_name] == pytest.approx(np.mean(defined), abs=0.05 + 1e-9)
            if len(defined) == 2:
                assert row["std"][column_name] == pytest.approx(np.std(defined, ddof=1), abs=0.005 + 1e-9)
        if name == "plain":
            ap = table["columns"].index("AP") - 1
            assert "{:.1f} ± {:.1f}".format(np.mean([v[ap] for v in per_seed]),
                                            np.std([v[ap] for v in per_seed], ddof=1)) in first.stdout

    second = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for name in ("plain", "crt"):
        assert "{}, seed 0: done".format(name) in second.stderr and "{}, seed 1: done".format(name) in second.stderr

    third_seed = command[:4] + ["--report-only", "--seeds", "3"] + command[6:]  # seed 2 not run: nothing trains
    partial = subprocess.run(third_seed, env=workspace["env"], capture_output=True, text=True, timeout=900)
    assert partial.returncode == 0, partial.stdout[-3000:] + partial.stderr[-3000:]
    assert "Baseline (Mask R-CNN) (2 of 3 seeds)" in partial.stdout and not (out / "runs" / "plain_seed2").exists()

    # the three calls that trained logged their wall times (the report-only call did not), each
    # job's time was printed
    assert "plain+crt_seed0 done in" in first.stderr and "this call took" in first.stderr
    calls = [line.split("\t") for line in (out / "runs" / "calls.log").read_text().splitlines()]
    assert [fields[2] for fields in calls] == ["exit 0"] * 3
    assert ["--only-seeds 1" in fields[3] for fields in calls] == [True, False, False]
    assert all(fields[3].startswith("bash lst_scripts/table1.sh ") and "--rows plain,crt --seeds 2" in fields[3]
               for fields in calls)
    starts = [datetime.datetime.strptime(fields[0], "%Y-%m-%dT%H:%M:%SZ") for fields in calls]
    seconds = [int(fields[1].removesuffix(" s")) for fields in calls]
    assert starts == sorted(starts) and all(s >= 0 for s in seconds)
    assert starts[0] + datetime.timedelta(seconds=seconds[0]) <= starts[1] + datetime.timedelta(seconds=1)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failing_training_stops_its_job_and_the_call_which_logs_its_exit_status(workspace, tmp_path, jobs):
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "lst_scripts", "table1.sh"), "--rows", "plain",
                             "--config-prefix", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "runs"),
                             "--no-fixed-ap", "--jobs", jobs], env=workspace["env"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    output = result.stderr if jobs == "1" else (tmp_path / "runs" / "logs" / "plain.log").read_text()
    assert "missing.yaml does not exist" in output and "plain: finished" not in output
    assert "## Table 1" not in result.stdout  # no report after a failed job
    if jobs == "2":
        assert "[table1] plain failed (exit 1) after" in result.stderr
    [call] = [line.split("\t") for line in (tmp_path / "runs" / "calls.log").read_text().splitlines()]
    assert call[2] == "exit {}".format(result.returncode)
    assert "(exit {}; logged in {})".format(result.returncode, tmp_path / "runs" / "calls.log") in result.stderr


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_call_stopped_by_a_signal_logs_its_time_and_the_signal(tmp_path, sig, status):
    """Ctrl-C (SIGINT to the process group) or SIGTERM to it: calls.log still gets the call's line."""
    script = tmp_path / "call.sh"
    script.write_text("source {}\nrecord_call_time {} bash table.sh --seeds 3\nsleep 600 > /dev/null 2>&1 &\n"
                      "echo ready\nwait\n".format(os.path.join(REPO_ROOT, "lst_scripts", "job_pool.sh"),
                                                  tmp_path / "runs" / "calls.log"))
    call = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert call.stdout.readline() == "ready\n"
        while subprocess.run(["pgrep", "-g", str(call.pid), "-x", "sleep"], capture_output=True).returncode:
            pass  # the job is a forked shell until it execs sleep: a signal then would run the call's traps twice
        os.killpg(call.pid, sig)
        _, stderr = call.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a job that ignored the signal
            os.killpg(call.pid, signal.SIGKILL)
    assert call.returncode == status
    [line] = (tmp_path / "runs" / "calls.log").read_text().splitlines()
    assert line.split("\t")[2:] == ["exit {}".format(status), "bash table.sh --seeds 3"]
    assert "(exit {}; logged in".format(status) in stderr


@pytest.mark.parametrize("script", ["table1.sh", "table3.sh", "ablations.sh"])
@pytest.mark.parametrize("options, problem", [
    (["--seeds", "2", "--only-seeds", "2"], "--only-seeds takes seeds among 0 .. 1 (--seeds 2), got '2'"),
    (["--seeds", "3", "--only-seeds", "0,x"], "--only-seeds takes seeds among 0 .. 2 (--seeds 3), got 'x'"),
    (["--only-seeds", "0"], "--only-seeds picks among the seeds of --seeds N; give --seeds too"),
    (["--seeds", "0"], "--seeds takes a number of seeds of 1 or more, got '0'"),
])
def test_seed_options_are_checked_before_anything_runs(workspace, tmp_path, script, options, problem):
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "lst_scripts", script), *options,
                             "--output-dir", str(tmp_path / "runs")], env=workspace["env"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "{}: {}".format(script, problem)
    assert not (tmp_path / "runs").exists()


def test_table1_some_rows_report_beside_their_runs_not_over_the_whole_table(workspace):
    out = workspace["dir"] / "table1_some_rows"
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "lst_scripts", "table1.sh"), "--report-only",
                             "--rows", "plain,cas", "--output-dir", str(out)], env=workspace["env"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads((out / "report_plain+cas" / "table1.json").read_text())
    assert [row["model"] for row in table["rows"]] == ["Baseline (Mask R-CNN)", "Class-aware sampling"]
    assert not (out / "report").exists()


def test_table3_report_only_lists_the_grid_points_not_run(workspace):
    out = workspace["dir"] / "table3"
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "lst_scripts", "table3.sh"), "--report-only",
                             "--grid", "2/1 3/1", "--seeds", "2", "--lst-config-dir", TEST_LST_CONFIGS,
                             "--output-dir", str(out / "runs"), "--report-dir", str(out / "report"),
                             "PATHS_CATALOG", workspace["catalog"]], env=workspace["env"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads((out / "report" / "table3.json").read_text())
    assert [(row["model"], row["status"]) for row in table["rows"]] == [
        ("b 2, phase size 1", "not run"), ("b 3, phase size 1", "not run")]
    assert [row["metrics_files"] for row in table["rows"]] == [
        [str(out / "runs" / "b{}_s1_seed{}".format(base, seed) / "not_finished") for seed in (0, 1)] for base in (2, 3)]
    assert not (out / "runs").exists()


def test_table3_trains_phase_0_once_per_base_size_and_resumes(workspace):
    out = workspace["dir"] / "table3_shared"
    command = ["bash", os.path.join(REPO_ROOT, "lst_scripts", "table3.sh"), "--grid", "2/4 2/2", "--jobs", "2",
               "--lst-config-dir", TEST_LST_CONFIGS, "--output-dir", str(out / "runs"),
               "--report-dir", str(out / "report"), "PATHS_CATALOG", workspace["catalog"]]
    first = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # phase size 2 comes first in training order, so its experiment trains phase 0 for both
    logs = out / "runs" / "logs"
    assert "starting phase0_b2:" in first.stderr
    assert "phase 0 copied from {}".format(out / "runs" / "b2_s2") in (logs / "b2_s4.log").read_text()
    assert "phase 0 of 2: done" in (logs / "b2_s2.log").read_text()
    owner, sharer = out / "runs" / "b2_s2", out / "runs" / "b2_s4"
    assert max_weight_difference(load_checkpoint(owner / "phase_0" / "model_final.pth")["model"],
                                 load_checkpoint(sharer / "phase_0" / "model_final.pth")["model"]) == 0
    assert [len(json.loads((run / "phases.json").read_text())["groups"]) for run in (owner, sharer)] == [3, 2]

    table = json.loads((out / "report" / "table3.json").read_text())
    assert [row["model"] for row in table["rows"]] == ["b 2, phase size 4 (phases 0-1)", "b 2, phase size 2 (phases 0-2)"]
    for row, run, last in zip(table["rows"], (sharer, owner), (1, 2)):
        final = next((run / "phase_{}".format(last) / "inference").glob("*/metrics.json"))
        assert row["metrics_files"] == [str(final)]

    second = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed = (logs / "b2_s4.log").read_text().split("[table3] b 2, phase size 4")[-1]  # the second call's part
    # a complete experiment is recognised without run_phases.sh
    assert "[table3] done ({})".format(sharer) in resumed and "[lst]" not in resumed

    # on a machine without the runs, the table comes from the earlier one (rows without the
    # division's "(phases 0-T)", which only a run knows)
    elsewhere = out / "elsewhere"
    earlier = subprocess.run(command[:2] + ["--report-only", "--earlier-table", str(out / "report" / "table3.json"),
                                            "--output-dir", str(elsewhere / "runs"), "--report-dir", str(elsewhere)]
                             + command[2:8] + command[12:], env=workspace["env"], capture_output=True, text=True,
                             timeout=300)
    assert earlier.returncode == 0, earlier.stdout[-3000:] + earlier.stderr[-3000:]
    again = json.loads((elsewhere / "table3.json").read_text())
    assert [row["model"] for row in again["rows"]] == ["b 2, phase size 4", "b 2, phase size 2"]
    assert [row["sources"] for row in again["rows"]] == [["earlier table"]] * 2
    assert [row["per_seed"] for row in again["rows"]] == [row["per_seed"] for row in table["rows"]]
    assert "From the earlier table" in earlier.stdout


def test_ablations_share_phase_0_switch_their_part_off_and_report_mean_and_std(workspace):
    out = workspace["dir"] / "ablations"
    command = ["bash", os.path.join(REPO_ROOT, "lst_scripts", "ablations.sh"), "--variants", "kd_off,replay_none",
               "--seeds", "2", "--jobs", "2", "--lst-config-dir", TEST_LST_CONFIGS, "--lst-dir", str(out / "lst"),
               "--output-dir", str(out / "variants"), "--report-dir", str(out / "report"),
               "PATHS_CATALOG", workspace["catalog"]]
    result = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    runs = {"LST w/o MWG (default)": [out / "lst_seed{}".format(seed) for seed in (0, 1)],
            "Distillation off": [out / "variants" / "kd_off_seed{}".format(seed) for seed in (0, 1)],
            "No replay": [out / "variants" / "replay_none_seed{}".format(seed) for seed in (0, 1)]}
    for seed in (0, 1):  # the variants start from the default chain's phase 0 of their seed
        default_phase0 = load_checkpoint(runs["LST w/o MWG (default)"][seed] / "phase_0" / "model_final.pth")["model"]
        for variant in ("Distillation off", "No replay"):
            phase0 = load_checkpoint(runs[variant][seed] / "phase_0" / "model_final.pth")["model"]
            assert max_weight_difference(phase0, default_phase0) == 0
    phase1 = {name: [yaml.safe_load((run / "phase_1" / "config.yml").read_text()) for run in dirs]
              for name, dirs in runs.items()}
    assert [c["MODEL"]["LST"]["DISTILL"]["ENABLED"] for c in phase1["Distillation off"]] == [False, False]
    assert [c["MODEL"]["LST"]["REPLAY"] for c in phase1["No replay"]] == ["none", "none"]
    assert [c["MODEL"]["LST"]["DISTILL"]["ENABLED"] for c in phase1["LST w/o MWG (default)"]] == [True, True]
    assert [c["SEED"] for c in phase1["No replay"]] == [1, 2]  # SEED + phase

    report = json.loads((out / "report" / "ablations.json").read_text())
    assert [(row["variant"], row["phase"]) for row in report["rows"]] == [
        (name, phase) for name in runs for phase in (0, 1)]
    for row in report["rows"]:
        per_seed = [json.loads(next((run / "phase_{}".format(row["phase"]) / "inference").glob("*/metrics.json"))
                               .read_text())["segm"]["groups"]["all"] for run in runs[row["variant"]]]
        values = [100 * v for v in per_seed if v >= 0]
        if values:
            assert row["AP all"] == pytest.approx(np.mean(values), abs=0.05 + 1e-9)
        if len(values) == 2:
            assert row["std"]["AP all"] == pytest.approx(np.std(values, ddof=1), abs=0.005 + 1e-9)
    for name in ("ablations.md", "ablations_ap_per_phase.png", "ablations_final.md", "ablations_final.json"):
        assert (out / "report" / name).is_file(), name
    final = json.loads((out / "report" / "ablations_final.json").read_text())
    assert [pair["comparison"] for pair in final["paired"]] == [
        "Distillation off − LST w/o MWG (default)", "No replay − LST w/o MWG (default)"]

    job_logs = sorted((out / "variants" / "logs").glob("*.log"))
    first_call_logs = [log.read_text() for log in job_logs]
    resumed = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    second_call_logs = "".join(log.read_text()[len(before):] for log, before in zip(job_logs, first_call_logs))
    for variant in ("default", "kd_off", "replay_none"):  # complete experiments, recognised without run_phases.sh
        for seed in (0, 1):
            assert "[ablations] {}, seed {}: done".format(variant, seed) in second_call_logs
    assert "[lst]" not in second_call_logs

    # on a machine without the runs, both reports come from the earlier ones
    elsewhere = out / "elsewhere"
    moved = [elsewhere / "lst" if arg == str(out / "lst") else elsewhere / "variants" if arg == str(out / "variants")
             else elsewhere / "report" if arg == str(out / "report") else arg for arg in command]
    earlier = subprocess.run(moved[:-2] + ["--report-only", "--earlier-report", str(out / "report")] + moved[-2:],
                             env=workspace["env"], capture_output=True, text=True, timeout=300)
    assert earlier.returncode == 0, earlier.stdout[-3000:] + earlier.stderr[-3000:]
    for name in ("ablations.json", "ablations_final.json"):
        before, after = (json.loads((root / name).read_text())["rows"] for root in (out / "report", elsewhere / "report"))
        assert [row["per_seed"] for row in after] == [row["per_seed"] for row in before], name
        assert {source for row in after for source in row["sources"]} == {"earlier table"}, name
    assert not (elsewhere / "lst_seed0").exists()
