#!/usr/bin/env bash
# The paper's ablations of LST (w/o MWG; §4.3): distillation off (Figure 7), replay of all the old
# classes' data instead of the balanced replay (Figure 8), and no replay at all, each against the
# default chain. Every variant is a lst_scripts/run_phases.sh experiment that starts from the
# default chain's phase 0 of the same seed (the ablated parts act in phases t >= 1 only); the
# default chain is table1.sh's LST w/o MWG run (trained here if it is not done). Writes
# REPORT_DIR/ablations.md, .json and ablations_ap_per_phase.png (old / new / all AP per phase,
# mean ± std over the seeds) and ablations_final.md, .json, _ap_per_bin.png (the last phase, as
# Table 1, with the paired differences variant - default).
#
#   bash lst_scripts/ablations.sh --seeds 2 --jobs 2  # the synthetic benchmark, seeds 0 and 1
#   bash lst_scripts/ablations.sh --lvis --gpus 8     # LVIS v0.5 (configs/lvis/lst)
#
# Options:
#   --lvis              LVIS v0.5 with configs/lvis/lst instead of the synthetic benchmark
#   --budget N          the synthetic training budget, as for table1.sh: 1000 (default) or 3000
#   --variants a,b,...  among kd_off, replay_all, replay_none (default: all three)
#   --seeds N           every variant with SEED 0 .. N-1 (default: one run with the configs' SEED)
#   --only-seeds S,...  with --seeds N: train only these of the seeds (the others run in another
#                       call or on another machine); the report still covers all N
#   --lst-dir DIR       the default chain (default: table1.sh's, output/lst/<benchmark>[_seed<s>])
#   --lst-config-dir D  phase0.yaml and incremental.yaml of every chain (default: the budget's
#                       lst/, or configs/lvis/lst)
#   --output-dir DIR    the variants go to DIR/<variant>[_seed<s>] (default output/ablations/<benchmark>)
#   --report-dir DIR    default: <the budget's report folder>/ablations (report/ablations for the
#                       synthetic 1000-iteration budget)
#   --report-only       train nothing: write the report from the runs finished so far
#   --earlier-report D  the report folder of an earlier call (e.g. report/ablations from another
#                       machine): the per-seed values of its ablations.json and ablations_final.json
#                       stand in for the runs not finished here (the same variants and seeds), as
#                       table1.sh's --earlier-table; the tables name them
#   --jobs N            experiments trained side by side (as table1.sh; logs in OUTPUT-DIR/logs):
#                       first the default chains, then the variants
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
variants="kd_off,replay_all,replay_none"
num_seeds=""
only_seeds=""
lst_dir=""
lst_config_dir=""
output_dir=""
report_dir=""
jobs=1
gpus=1
report_only=""
earlier_report=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lvis) benchmark=lvis; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --seeds) num_seeds="$2"; shift 2 ;;
    --only-seeds) only_seeds="$2"; shift 2 ;;
    --lst-dir) lst_dir="$2"; shift 2 ;;
    --lst-config-dir) lst_config_dir="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    --earlier-report) earlier_report="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "ablations.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "ablations.sh: --jobs takes a number of runs of 1 or more, got '$jobs'" >&2
  exit 2
fi

# The variants: key -> title, and the config overrides of its phases.
declare -A variant_title=([kd_off]="Distillation off" [replay_all]="Replay all old data" [replay_none]="No replay")
declare -A variant_opts=([kd_off]="MODEL.LST.DISTILL.ENABLED False" [replay_all]="MODEL.LST.REPLAY all"
  [replay_none]="MODEL.LST.REPLAY none")
IFS=',' read -r -a selected <<< "$variants"
for variant in "${selected[@]}"; do
  if [ -z "${variant_title[$variant]+set}" ]; then
    echo "ablations.sh: unknown variant '$variant'; variants: ${!variant_title[*]}" >&2
    exit 2
  fi
done

source lst_scripts/benchmark_budget.sh
source lst_scripts/job_pool.sh
source lst_scripts/seeds.sh
resolve_budget "$benchmark" "$budget" || exit 2
resolve_seeds "$num_seeds" "$only_seeds" || exit 2
source lst_scripts/setup_env.sh
lst_config_dir="${lst_config_dir:-$budget_configs/lst}"
lst_dir="${lst_dir:-output/lst/$run_name}"
output_dir="${output_dir:-output/ablations/$run_name}"
[ -n "$report_only" ] || record_call_time "$output_dir/calls.log" bash "lst_scripts/ablations.sh" "${call_args[@]}"
report_dir="${report_dir:-$report_root/ablations}"

# The experiment folder of variant $1 ("default" for the default chain) with seed $2.
experiment_dir() {
  if [ "$1" = default ]; then echo "$lst_dir${2:+_seed$2}"; else echo "$output_dir/$1${2:+_seed$2}"; fi
}

# Runs the chain of variant $1 with seed $2 ("-" = the configs'), after copying the default chain's
# finished phase 0 into it when it has not started; nothing when its experiment is complete.
train_variant() {
  local variant="$1" seed="$2" experiment seed_opts=() opts=()
  [ "$seed" = - ] && seed=""
  [ -n "$seed" ] && seed_opts=(--seed "$seed")
  experiment=$(experiment_dir "$variant" "$seed")
  if [ "$(python tools/lst_experiment.py "$experiment" complete)" = complete ]; then
    echo "[ablations] $variant${seed:+, seed $seed}: done ($experiment)"
    return
  fi
  if [ "$variant" != default ]; then
    read -r -a opts <<< "${variant_opts[$variant]}"
    python tools/lst_experiment.py "$experiment" share-phase0 "$(experiment_dir default "$seed")" > /dev/null
  fi
  bash lst_scripts/run_phases.sh --config-dir "$lst_config_dir" --output-dir "$experiment" \
    "${seed_opts[@]}" --gpus "$gpus" "${overrides[@]}" "${opts[@]}"
}

# First the default chains (one job per seed), then the variants (one per variant and seed), which
# start from their seed's default phase 0.
default_jobs=() variant_jobs=()
for seed in "${train_seeds[@]}"; do
  default_jobs+=("default${seed:+_seed$seed} default ${seed:--}")
  for variant in "${selected[@]}"; do
    variant_jobs+=("$variant${seed:+_seed$seed} $variant ${seed:--}")
  done
done
if [ -z "$report_only" ]; then
  run_jobs "$jobs" "$output_dir/logs" train_variant "${default_jobs[@]}"
  run_jobs "$jobs" "$output_dir/logs" train_variant "${variant_jobs[@]}"
fi

# The reports: per phase, and the last phase as Table 1 with the paired differences.
phase_runs=() final_rows=() pairs=()
for variant in default "${selected[@]}"; do
  title="${variant_title[$variant]:-LST w/o MWG (default)}"
  dirs=() files=()
  for seed in "${seeds[@]}"; do
    experiment=$(experiment_dir "$variant" "$seed")
    dirs+=("$experiment")
    files+=("$(python tools/lst_experiment.py "$experiment" final-metrics)")
  done
  phase_runs+=(--run "$title=$(IFS=','; echo "${dirs[*]}")")
  final_rows+=(--row "$title=$(IFS=','; echo "${files[*]}")")
  [ "$variant" != default ] && pairs+=(--paired "$title" "LST w/o MWG (default)")
done
budget_title=""
[ "$benchmark" = synthetic ] && budget_title=", ${budget:-1000} iterations"
title="Ablations of LST w/o MWG on $benchmark$budget_title ($(date +%Y-%m-%d))$seeds_title"
earlier_final=() earlier_phases=()
if [ -n "$earlier_report" ]; then
  earlier_final=(--earlier-table "$earlier_report/ablations_final.json")
  earlier_phases=(--earlier-table "$earlier_report/ablations.json")
fi
python tools/lst_report.py table1 --name ablations_final "${final_rows[@]}" "${pairs[@]}" "${earlier_final[@]}" \
  --output-dir "$report_dir" --title "$title: the last phase" > /dev/null
python tools/lst_report.py ablations "${phase_runs[@]}" "${earlier_phases[@]}" --output-dir "$report_dir" --title "$title"
cat "$report_dir/ablations_final.md"
