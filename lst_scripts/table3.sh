#!/usr/bin/env bash
# Table 3 of the paper: LST (w/o MWG) for several base sizes b and phase sizes, each a full
# lst_scripts/run_phases.sh experiment, gathered into REPORT_DIR/table3.md, table3.json and
# table3_ap_per_bin.png (the final phase's metrics of each; AP is the paper's column).
#
#   bash lst_scripts/table3.sh --jobs 2         # the synthetic benchmark (64 classes), two at a time
#   bash lst_scripts/table3.sh --lvis --gpus 8  # LVIS v0.5, the paper's grid
#
# The paper's grid on LVIS v0.5's 1,230 classes: b/phase size 110/160, 270/160, 270/320, 270/480,
# 270/960, 590/160, 590/320. On the 64 synthetic classes the same fractions of the classes:
# 6/8, 14/8, 14/17, 14/25, 14/50, 31/8, 31/17.
#
# Grid points with one base size share phase 0 (it depends on the base classes and the seed alone):
# it is trained once, first, and copied into the other chains of that base size.
#
# Options:
#   --lvis              LVIS v0.5 with configs/lvis/lst instead of the synthetic benchmark
#   --budget N          the synthetic phases' schedules, as for table1.sh: 1000 (default;
#                       configs/synthetic/budget_1000/lst) or 3000 (configs/synthetic/lst); each
#                       phase t >= 1 trains that folder's incremental.yaml, so a grid point with
#                       more phases trains longer in all
#   --grid "b/s ..."    the (base size)/(phase size) pairs to run (default: as above)
#   --output-dir DIR    experiments go to DIR/b<b>_s<s> (default output/table3/<benchmark>, the
#                       benchmark named as for table1.sh: synthetic_budget_1000, synthetic, lvis)
#   --seeds N           run every pair with SEED 0 .. N-1 (experiments DIR/b<b>_s<s>_seed<seed>):
#                       mean ± sample standard deviation over the seeds (default: the config's SEED)
#   --only-seeds S,...  with --seeds N: train only these of the seeds (the others run in another
#                       call or on another machine); the report still covers all N
#   --earlier-table F   a table3.json written before (e.g. report/table3.json from another machine):
#                       its per-seed values stand in for the runs not finished here (the same grid
#                       points and seeds), as table1.sh's option; the table names them
#   --report-dir DIR    default: the budget's report folder (report for the 1000-iteration budget,
#                       report/budget_3000, report/lvis)
#   --lst-config-dir D  phase0.yaml and incremental.yaml of every chain (default: the budget's
#                       lst/, or configs/lvis/lst)
#   --report-only       train nothing: write the report from the runs finished so far
#   --jobs N            experiments trained side by side (as table1.sh; logs in OUTPUT-DIR/logs)
#   --gpus N            processes per phase through torchrun (default 1)
#   KEY VALUE ...       after the options: config overrides for every phase of every run
# Re-running resumes every experiment where it stopped.
# Every call that trains appends its wall time to OUTPUT-DIR/calls.log (start, seconds, exit
# status, command), so a table trained over several calls has its total; each job's time is printed.
set -euo pipefail
shopt -s inherit_errexit  # a failing run inside $(...) stops the script
cd "$(dirname "${BASH_SOURCE[0]}")/.."
call_args=("$@")

benchmark=synthetic
budget=""
lst_config_dir=""
grid=""
output_dir=""
report_dir=""
num_seeds=""
only_seeds=""
jobs=1
gpus=1
report_only=""
earlier_table=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lvis) benchmark=lvis; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --lst-config-dir) lst_config_dir="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --grid) grid="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --seeds) num_seeds="$2"; shift 2 ;;
    --only-seeds) only_seeds="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    --earlier-table) earlier_table="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "table3.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "table3.sh: --jobs takes a number of runs of 1 or more, got '$jobs'" >&2
  exit 2
fi
source lst_scripts/benchmark_budget.sh
source lst_scripts/job_pool.sh
source lst_scripts/seeds.sh
resolve_budget "$benchmark" "$budget" || exit 2
resolve_seeds "$num_seeds" "$only_seeds" || exit 2
if [ "$benchmark" = lvis ]; then
  grid="${grid:-110/160 270/160 270/320 270/480 270/960 590/160 590/320}"
else
  grid="${grid:-6/8 14/8 14/17 14/25 14/50 31/8 31/17}"
fi
lst_config_dir="${lst_config_dir:-$budget_configs/lst}"
output_dir="${output_dir:-output/table3/$run_name}"
[ -n "$report_only" ] || record_call_time "$output_dir/calls.log" bash "lst_scripts/table3.sh" "${call_args[@]}"
report_dir="${report_dir:-$report_root}"

source lst_scripts/setup_env.sh

# The experiment folder of grid point $1 (base size), $2 (phase size) with seed $3 ("" or "-" = the config's).
experiment_dir() {
  local seed="${3#-}"
  echo "$output_dir/b$1_s$2${seed:+_seed$seed}"
}

# Runs lst_scripts/run_phases.sh for grid point $1/$2 with seed $3 ("-" = the config's) and the
# run_phases.sh options that follow, unless its experiment is complete (one short call instead of
# run_phases.sh's checks).
run_grid_point() {
  local base="$1" phase_size="$2" seed="${3#-}" seed_opts=() experiment
  shift 3
  experiment=$(experiment_dir "$base" "$phase_size" "$seed")
  if [ "$(python tools/lst_experiment.py "$experiment" complete)" = complete ]; then
    echo "[table3] done ($experiment)"
    return
  fi
  [ -n "$seed" ] && seed_opts=(--seed "$seed")
  bash lst_scripts/run_phases.sh --config-dir "$lst_config_dir" --output-dir "$experiment" \
    "${seed_opts[@]}" --gpus "$gpus" "$@" "${overrides[@]}" MODEL.LST.BASE_SIZE "$base" MODEL.LST.PHASE_SIZE "$phase_size"
}

# The grid points in training order: smaller phase sizes first (more phases: the longest chains
# start first), then smaller base sizes. Phase 0 depends on the base size and the seed alone, so
# the grid points of one base size share it: the first of them in this order trains it, in a
# round before the chains, and the others copy it (run_phases.sh --phase0-from).
train_grid=$(tr ' ' '\n' <<< "$grid" | sort -t/ -k2,2n -k1,1n)
declare -A phase0_owner=() base_count=()
for pair in $train_grid; do
  base="${pair%/*}"
  base_count[$base]=$(( ${base_count[$base]:-0} + 1 ))
  [ -n "${phase0_owner[$base]:-}" ] || phase0_owner[$base]="${pair#*/}"
done

# Whether base size $1 has several grid points, hence one phase 0 trained once and shared.
phase0_is_shared() {
  [ "${base_count[$1]}" -gt 1 ]
}

# Phase 0 of base size $1 with seed $2, in the experiment of the base size's first grid point.
train_shared_phase0() {
  local seed="${2#-}"
  echo "[table3] phase 0 of b $1${seed:+, seed $seed}, shared by ${base_count[$1]} grid points"
  run_grid_point "$1" "${phase0_owner[$1]}" "$2" --until-phase 0
}

# The chain of grid point $1/$2 with seed $3, from its base size's shared phase 0 if it has one.
train_grid_point() {
  local base="$1" phase_size="$2" seed="$3" shown_seed="${3#-}" share=()
  if phase0_is_shared "$base" && [ "$phase_size" != "${phase0_owner[$base]}" ]; then
    share=(--phase0-from "$(experiment_dir "$base" "${phase0_owner[$base]}" "$seed")")
  fi
  echo "[table3] b $base, phase size $phase_size${shown_seed:+, seed $shown_seed} -> $(experiment_dir "$@")"
  run_grid_point "$base" "$phase_size" "$seed" "${share[@]}"
}

phase0_jobs=() job_list=()
for pair in $train_grid; do
  base="${pair%/*}"
  for seed in "${train_seeds[@]}"; do
    if phase0_is_shared "$base" && [ "${pair#*/}" = "${phase0_owner[$base]}" ]; then
      phase0_jobs+=("phase0_b$base${seed:+_seed$seed} $base ${seed:--}")
    fi
    job_list+=("b${base}_s${pair#*/}${seed:+_seed$seed} $base ${pair#*/} ${seed:--}")
  done
done
if [ -z "$report_only" ]; then
  if [ ${#phase0_jobs[@]} -gt 0 ]; then
    run_jobs "$jobs" "$output_dir/logs" train_shared_phase0 "${phase0_jobs[@]}"
  fi
  run_jobs "$jobs" "$output_dir/logs" train_grid_point "${job_list[@]}"
fi

report_rows=()
for pair in $grid; do
  base="${pair%/*}"
  phase_size="${pair#*/}"
  files=() phases_label=""
  for seed in "${seeds[@]}"; do
    experiment=$(experiment_dir "$base" "$phase_size" "$seed")
    files+=("$(python tools/lst_experiment.py "$experiment" final-metrics)")
    # The phases of the division (phases.json is written when the experiment starts).
    if [ -z "$phases_label" ] && [ -f "$experiment/phases.json" ]; then
      phases_label=" (phases 0-$(python tools/lst_experiment.py "$experiment" last-phase))"
    fi
  done
  report_rows+=(--row "b $base, phase size $phase_size$phases_label=$(IFS=','; echo "${files[*]}")")
done

budget_title=""
[ "$benchmark" = synthetic ] && budget_title=", ${budget:-1000}-iteration phase schedules"
[ -n "$earlier_table" ] && report_rows+=(--earlier-table "$earlier_table")
python tools/lst_report.py table1 --name table3 "${report_rows[@]}" --output-dir "$report_dir" \
  --title "Table 3 on $benchmark$budget_title$seeds_title: base size and phase size (LST w/o MWG, final phase)"
