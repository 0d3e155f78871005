#!/usr/bin/env bash
# Table 1 of the paper: the baselines (plain Mask R-CNN, modified backbone, class-aware sampling,
# repeat-factor sampling) and the box-head losses that came after LST (federated loss, EQLv2,
# Seesaw; MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS, docs/long_tail_losses.md), each trained and evaluated with tools/train_net.py, and LST w/o and
# w/ the meta weight generator (the last phase of lst_scripts/run_phases.sh), gathered into REPORT_DIR/table1.md, table1.json
# and table1_ap_per_bin.png by tools/lst_report.py.
#
#   bash lst_scripts/table1.sh                 # the embedded synthetic benchmark, on the CPU
#   bash lst_scripts/table1.sh --seeds 3 --jobs 2  # every row with SEED 0, 1 and 2, two runs at a time
#   bash lst_scripts/table1.sh --lvis --gpus 8 # LVIS v0.5, the paper's settings (configs/lvis/)
#
# Options:
#   --lvis              LVIS v0.5 (datasets/lvis must hold it; see INSTALL.md) instead of synthetic
#   --budget N          the synthetic benchmark's training budget, in iterations of 8 images per
#                       row: 1000 (default; configs/synthetic/budget_1000, runs in
#                       output/table1/synthetic_budget_1000 and output/lst/synthetic_budget_1000)
#                       or 3000 (configs/synthetic, runs in output/table1/synthetic and
#                       output/lst/synthetic, report in report/budget_3000)
#   --rows a,b,...      rows to run, among: plain, modified_backbone, cas, rfs, federated, eqlv2,
#                       seesaw, crt, lst, lst_mwg (default: all); crt re-trains the classifier of
#                       plain's model_final.pth of the same seed (trained first if needed)
#   --output-dir DIR    where the baseline runs go (default: output/table1/<benchmark>, as above)
#   --lst-dir DIR       the LST experiment (default: output/lst/<benchmark>, as above);
#                       LST w MWG goes to DIR_mwg and starts from DIR's phase 0 when it is done
#                       (phase 0 is the same in both: the generator trains in phases t >= 1)
#   --report-dir DIR    where the table goes (default: report for synthetic, report/lvis for LVIS;
#                       with --rows short of every row, OUTPUT-DIR/report_<rows>, so that a call for
#                       some rows never replaces the whole table)
#   --config-prefix P   the baselines' configs are P.yaml, P_modified_backbone.yaml, P_cas.yaml,
#                       P_rfs.yaml, P_federated.yaml, P_eqlv2.yaml, P_seesaw.yaml and P_crt.yaml (default:
#                       the budget's e2e_mask_rcnn_R_18_FPN_cpu, or the LVIS one), evaluated on
#                       --test-set NAME (default synthetic_lt_val or lvis_v0.5_val); the LST rows
#                       use --lst-config-dir DIR (default: the budget's lst/, or configs/lvis/lst).
#                       For a benchmark of one's own.
#   --seeds N           train every row with SEED 0 .. N-1 (the same data), each seed in run
#                       folders of its own (<run>_seed<s>: OUTPUT_DIR/<row>_seed<s>, LST-DIR_seed<s>,
#                       LST-DIR_mwg_seed<s>); the table gives the mean ± sample standard deviation
#                       over the seeds and the paired differences of the rows README compares
#                       (default: one run per row with the configs' SEED, in the folders above
#                       without the suffix)
#   --only-seeds S,...  with --seeds N: train only these of the seeds 0 .. N-1 (the others run in
#                       another call or on another machine); the report still covers all N
#   --earlier-table F   a table1.json written before (e.g. report/table1.json from another machine):
#                       the per-seed values of its rows stand in for the runs whose metrics file
#                       is not here (the same rows and seeds); the table names them
#   --no-fixed-ap       skip the Fixed AP evaluation (Dave et al. 2021) that follows each run: its
#                       model evaluated again without the per-image cap, every detection scoring
#                       at least 0.0001, at most --fixed-ap-per-class K (default 50) per class and
#                       image, into <run>/fixed_ap/ (LST: the last phase's folder), from which the
#                       table's Fixed AP columns come
#   --report-only       train nothing: write the table from the runs finished so far (a row
#                       with seeds missing says how many it has)
#   --jobs N            jobs trained side by side (default 1), each with OMP_NUM_THREADS =
#                       cores / N unless OMP_NUM_THREADS is set, its output in
#                       OUTPUT-DIR/logs/<rows>[_seed<s>].log. A job is one row and seed, except
#                       that LST w/o and w MWG of a seed are one job (lst+lst_mwg, so that w MWG
#                       starts from w/o MWG's phase 0), and so are plain and crt (plain+crt)
#   --gpus N            processes per run through torchrun (default 1)
#   KEY VALUE ...       after the options: config overrides for every run (e.g. SOLVER.MAX_ITER 500)
# Re-running resumes: a finished run (its metrics.json exists) is skipped, an interrupted one
# continues from its last checkpoint.
# Every call that trains appends its wall time to OUTPUT-DIR/calls.log (start, seconds, exit
# status, command), so a table trained over several calls has its total; each job's time is printed.
set -euo pipefail
shopt -s inherit_errexit  # a failing run inside $(...) stops the script
cd "$(dirname "${BASH_SOURCE[0]}")/.."
call_args=("$@")

benchmark=synthetic
budget=""
all_rows="plain,modified_backbone,cas,rfs,federated,eqlv2,seesaw,crt,lst,lst_mwg"
rows="$all_rows"
output_dir=""
lst_dir=""
report_dir=""
config_prefix=""
test_set=""
lst_config_dir=""
num_seeds=""
only_seeds=""
earlier_table=""
fixed_ap=1
fixed_ap_per_class=50
jobs=1
gpus=1
report_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lvis) benchmark=lvis; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --seeds) num_seeds="$2"; shift 2 ;;
    --only-seeds) only_seeds="$2"; shift 2 ;;
    --earlier-table) earlier_table="$2"; shift 2 ;;
    --no-fixed-ap) fixed_ap=""; shift ;;
    --fixed-ap-per-class) fixed_ap_per_class="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --lst-dir) lst_dir="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --config-prefix) config_prefix="$2"; shift 2 ;;
    --test-set) test_set="$2"; shift 2 ;;
    --lst-config-dir) lst_config_dir="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "table1.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "table1.sh: --jobs takes a number of runs of 1 or more, got '$jobs'" >&2
  exit 2
fi
if ! [[ "$fixed_ap_per_class" =~ ^[1-9][0-9]*$ ]]; then
  echo "table1.sh: --fixed-ap-per-class takes a number of detections of 1 or more, got '$fixed_ap_per_class'" >&2
  exit 2
fi

source lst_scripts/benchmark_budget.sh
source lst_scripts/job_pool.sh
source lst_scripts/seeds.sh
resolve_budget "$benchmark" "$budget" || exit 2
resolve_seeds "$num_seeds" "$only_seeds" || exit 2

source lst_scripts/setup_env.sh
if [ "$benchmark" = synthetic ]; then
  config_prefix="${config_prefix:-$budget_configs/e2e_mask_rcnn_R_18_FPN_cpu}"
  test_set="${test_set:-synthetic_lt_val}"
  if [[ "$config_prefix" == configs/synthetic/* ]] \
    && { [ ! -f datasets/synthetic_lt/train.json ] || [ ! -f datasets/synthetic_lt/val.json ]; }; then
    python tools/make_synthetic_lvis.py --output datasets/synthetic_lt --force
  fi
else
  config_prefix="${config_prefix:-$budget_configs/e2e_mask_rcnn_R_50_FPN_1x_lvis_v0.5}"
  test_set="${test_set:-lvis_v0.5_val}"
fi
lst_config_dir="${lst_config_dir:-$budget_configs/lst}"
output_dir="${output_dir:-output/table1/$run_name}"
[ -n "$report_only" ] || record_call_time "$output_dir/calls.log" bash "lst_scripts/table1.sh" "${call_args[@]}"
lst_dir="${lst_dir:-output/lst/$run_name}"
if [ -z "$report_dir" ] && [ "$rows" = "$all_rows" ]; then
  report_dir="$report_root"
elif [ -z "$report_dir" ]; then
  report_dir="$output_dir/report_${rows//,/+}"
fi

# The rows: key -> title (the report's row name), and for the baselines the config suffix. A new
# baseline row needs a title, a suffix (config <prefix><suffix>.yaml) and its key in rows= above.
declare -A row_title=(
  [plain]="Baseline (Mask R-CNN)"
  [modified_backbone]="Modified backbone (cosine + MaskX)"
  [cas]="Class-aware sampling"
  [rfs]="Repeat-factor sampling"
  [federated]="Federated loss"
  [eqlv2]="EQLv2"
  [seesaw]="Seesaw loss"
  [crt]="cRT (classifier re-training)"
  [lst]="LST w/o MWG"
  [lst_mwg]="LST w MWG"
)
declare -A row_suffix=([plain]="" [modified_backbone]="_modified_backbone" [cas]="_cas" [rfs]="_rfs"
  [federated]="_federated" [eqlv2]="_eqlv2" [seesaw]="_seesaw" [crt]="_crt")
# Rows that start from another row's trained model (MODEL.WEIGHT its model_final.pth, same seed);
# they run in the job of that row, after it.
declare -A row_start=([crt]=plain)
# Paired comparisons over the same seeds, "A B" for A - B, reported when both rows are run.
paired_rows=("lst rfs" "lst cas" "lst_mwg lst")

launcher=(python)
[ "$gpus" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$gpus")

# The experiment folder of LST row $1 (lst or lst_mwg) with seed $2 ("" = the config's).
lst_experiment() {
  local suffix="${2:+_seed$2}"
  if [ "$1" = lst_mwg ]; then echo "${lst_dir}_mwg$suffix"; else echo "$lst_dir$suffix"; fi
}

# Trains LST row $1 with seed $2 by run_phases.sh, unless its experiment is complete (checked here
# in one short call: run_phases.sh takes about 40 s to find nothing to do). LST w MWG starts
# from the w/o-MWG run's phase 0 of the same seed when it is done (phase 0 is the same in both:
# the generator trains in phases t >= 1).
train_lst() {
  local row="$1" seed="$2" experiment
  local seed_opts=() mwg_opts=()
  [ -n "$seed" ] && seed_opts=(--seed "$seed")
  experiment=$(lst_experiment "$row" "$seed")
  if [ "$(python tools/lst_experiment.py "$experiment" complete)" = complete ]; then
    echo "[table1] $row${seed:+, seed $seed}: done ($experiment)"
    return
  fi
  if [ "$row" = lst_mwg ]; then
    mwg_opts=(MODEL.FEW_SHOT.ENABLED True)
    python tools/lst_experiment.py "$experiment" share-phase0 "$(lst_experiment lst "$seed")" > /dev/null
  fi
  bash lst_scripts/run_phases.sh --config-dir "$lst_config_dir" --output-dir "$experiment" \
    "${seed_opts[@]}" --gpus "$gpus" "${overrides[@]}" "${mwg_opts[@]}"
}

# The metrics.json of LST row $1 with seed $2: its last phase's, or a path that does not exist
# (a run not finished).
lst_metrics() {
  python tools/lst_experiment.py "$(lst_experiment "$1" "$2")" final-metrics
}

# The folder of the model of row $1 with seed $2 (the last phase's for LST rows), or a path that
# does not exist before an LST experiment has divided its classes.
model_dir() {
  if [ "$1" = lst ] || [ "$1" = lst_mwg ]; then
    python tools/lst_experiment.py "$(lst_experiment "$1" "$2")" final-dir
  else
    echo "$output_dir/$1${2:+_seed$2}"
  fi
}

# The metrics.json of the Fixed AP evaluation of the model in folder $1 (model_dir's).
fixed_ap_metrics() {
  echo "$1/fixed_ap/inference/$test_set/metrics.json"
}

# Evaluates the trained model of row $1 with seed $2 for Fixed AP (Dave et al. 2021, Sec. 3), unless
# done: no per-image cap, every detection scoring at least 0.0001, at most $fixed_ap_per_class per
# class and image, then the evaluator's TEST.LVIS_FIXED_AP_DETS_PER_CLASS best of each class.
evaluate_fixed_ap() {
  local dir
  dir=$(model_dir "$1" "$2")
  if [ -z "$fixed_ap" ] || [ -f "$(fixed_ap_metrics "$dir")" ]; then
    return
  fi
  echo "[table1] $1${2:+, seed $2}: Fixed AP evaluation in $dir/fixed_ap"
  "${launcher[@]}" tools/test_net.py --config-file "$dir/config.yml" --ckpt "$dir/model_final.pth" \
    "${overrides[@]}" OUTPUT_DIR "$dir/fixed_ap" TEST.LVIS_FIXED_AP True MODEL.ROI_HEADS.DETECTIONS_PER_IMG 0 \
    MODEL.ROI_HEADS.SCORE_THRESH 0.0001 MODEL.ROI_HEADS.DETECTIONS_PER_CLASS "$fixed_ap_per_class"
}

# The metrics.json of baseline row $1 with seed $2.
baseline_metrics() {
  echo "$output_dir/$1${2:+_seed$2}/inference/$test_set/metrics.json"
}

# Trains and tests baseline row $1 with seed $2 if its metrics.json does not exist yet.
train_baseline() {
  local row="$1" seed="$2" run_dir="$output_dir/$1${2:+_seed$2}"
  local seed_opts=() start_opts=()
  [ -n "$seed" ] && seed_opts=(SEED "$seed")
  [ -n "${row_start[$row]+set}" ] && start_opts=(MODEL.WEIGHT "$output_dir/${row_start[$row]}${seed:+_seed$seed}/model_final.pth")
  if [ -f "$(baseline_metrics "$row" "$seed")" ]; then
    echo "[table1] $row${seed:+, seed $seed}: done ($(baseline_metrics "$row" "$seed"))"
    return
  fi
  echo "[table1] $row${seed:+, seed $seed}: training and testing in $run_dir"
  local start
  start=$(date +%s)
  "${launcher[@]}" tools/train_net.py --config-file "$config_prefix${row_suffix[$row]}.yaml" \
    OUTPUT_DIR "$run_dir" "${overrides[@]}" "${seed_opts[@]}" "${start_opts[@]}"
  echo "[table1] $row${seed:+, seed $seed}: finished in $(( ($(date +%s) - start) / 60 )) min"
}

IFS=',' read -r -a selected <<< "$rows"
for row in "${selected[@]}"; do
  if [ -z "${row_title[$row]+set}" ]; then
    echo "table1.sh: unknown row '$row'; rows: ${!row_title[*]}" >&2
    exit 2
  fi
done

# The jobs, seed by seed: "<name> <rows> <seed>" with "-" for the configs' seed; <rows> is a
# baseline and the rows that start from it (row_start), or the LST rows of the seed (w/o MWG,
# then w MWG), comma-separated.
job_list=()
add_job() {
  job_list+=("${1//,/+}${2:+_seed$2} $1 ${2:--}")
}
for seed in "${train_seeds[@]}"; do
  lst_rows=()
  for row in "${selected[@]}"; do
    if [ "$row" = lst ] || [ "$row" = lst_mwg ]; then lst_rows+=("$row"); fi
  done
  [ ${#lst_rows[@]} -gt 0 ] && add_job "$(IFS=','; echo "${lst_rows[*]}")" "$seed"
  for row in "${selected[@]}"; do
    if [ "$row" = lst ] || [ "$row" = lst_mwg ] || [ -n "${row_start[$row]+set}" ]; then continue; fi
    job_rows="$row"
    for dependent in "${selected[@]}"; do
      [ "${row_start[$dependent]:-}" = "$row" ] && job_rows+=",$dependent"
    done
    add_job "$job_rows" "$seed"
  done
  for dependent in "${selected[@]}"; do
    if [ -n "${row_start[$dependent]+set}" ] && [[ ",$rows," != *",${row_start[$dependent]},"* ]]; then
      add_job "${row_start[$dependent]},$dependent" "$seed"
    fi
  done
done

# Trains the rows of one job (comma-separated) with seed $2 ("-" = the configs').
run_job() {
  local job_rows="$1" seed="$2" row
  [ "$seed" = - ] && seed=""
  IFS=',' read -r -a job_row_list <<< "$job_rows"
  for row in "${job_row_list[@]}"; do
    if [ "$row" = lst ] || [ "$row" = lst_mwg ]; then
      train_lst "$row" "$seed"
    else
      train_baseline "$row" "$seed"
    fi
    evaluate_fixed_ap "$row" "$seed"
  done
}
if [ -z "$report_only" ]; then
  run_jobs "$jobs" "$output_dir/logs" run_job "${job_list[@]}"
fi

report_args=()
for row in "${selected[@]}"; do
  files=() fixed_ap_files=()
  for seed in "${seeds[@]}"; do
    if [ "$row" = lst ] || [ "$row" = lst_mwg ]; then
      files+=("$(lst_metrics "$row" "$seed")")
    else
      files+=("$(baseline_metrics "$row" "$seed")")
    fi
    fixed_ap_files+=("$(fixed_ap_metrics "$(model_dir "$row" "$seed")")")
  done
  report_args+=(--row "${row_title[$row]}=$(IFS=','; echo "${files[*]}")")
  report_args+=(--fixed-ap "${row_title[$row]}=$(IFS=','; echo "${fixed_ap_files[*]}")")
done
for pair in "${paired_rows[@]}"; do
  read -r row_a row_b <<< "$pair"
  if [[ ",$rows," == *",$row_a,"* ]] && [[ ",$rows," == *",$row_b,"* ]]; then
    report_args+=(--paired "${row_title[$row_a]}" "${row_title[$row_b]}")
  fi
done

[ -n "$earlier_table" ] && report_args+=(--earlier-table "$earlier_table")
budget_title=""
[ "$benchmark" = synthetic ] && budget_title=", ${budget:-1000} iterations"
python tools/lst_report.py table1 "${report_args[@]}" --output-dir "$report_dir" \
  --title "Table 1 on $benchmark$budget_title ($(date +%Y-%m-%d))$seeds_title"
cat "$report_dir/table1.md"
