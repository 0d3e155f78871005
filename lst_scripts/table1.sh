#!/usr/bin/env bash
# Table 1 of the paper: the baselines (plain Mask R-CNN, modified backbone, class-aware sampling,
# repeat-factor sampling), each trained and evaluated with tools/train_net.py, and LST w/o and
# w/ the meta weight generator (the last phase of lst_scripts/run_phases.sh), gathered into REPORT_DIR/table1.md, table1.json
# and table1_ap_per_bin.png by tools/lst_report.py.
#
#   bash lst_scripts/table1.sh                 # the embedded synthetic benchmark, on the CPU
#   bash lst_scripts/table1.sh --lvis --gpus 8 # LVIS v0.5, the paper's settings (configs/lvis/)
#
# Options:
#   --lvis              LVIS v0.5 (datasets/lvis must hold it; see INSTALL.md) instead of synthetic
#   --rows a,b,...      rows to run, among: plain, modified_backbone, cas, rfs, lst, lst_mwg
#                       (default: all)
#   --output-dir DIR    where the baseline runs go (default: output/table1/<synthetic|lvis>)
#   --lst-dir DIR       the LST experiment (default: output/lst/<synthetic|lvis>, run_phases.sh's);
#                       LST w MWG goes to DIR_mwg and starts from DIR's phase 0 when it is done
#                       (phase 0 is the same in both: the generator trains in phases t >= 1)
#   --report-dir DIR    where the table goes (default: report for synthetic, report/lvis for LVIS)
#   --gpus N            processes per run through torchrun (default 1)
#   KEY VALUE ...       after the options: config overrides for every run (e.g. SOLVER.MAX_ITER 500)
# Re-running resumes: a finished row (its metrics.json exists) is skipped, an interrupted one
# continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

benchmark=synthetic
rows="plain,modified_backbone,cas,rfs,lst,lst_mwg"
output_dir=""
lst_dir=""
report_dir=""
gpus=1
while [ $# -gt 0 ]; do
  case "$1" in
    --lvis) benchmark=lvis; shift ;;
    --rows) rows="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --lst-dir) lst_dir="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "table1.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")

source lst_scripts/setup_env.sh
if [ "$benchmark" = synthetic ]; then
  config_prefix=configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu
  test_set=synthetic_lt_val
  default_report=report
  if [ ! -f datasets/synthetic_lt/train.json ] || [ ! -f datasets/synthetic_lt/val.json ]; then
    python tools/make_synthetic_lvis.py --output datasets/synthetic_lt --force
  fi
else
  config_prefix=configs/lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v0.5
  test_set=lvis_v0.5_val
  default_report=report/lvis
fi
output_dir="${output_dir:-output/table1/$benchmark}"
lst_dir="${lst_dir:-output/lst/$benchmark}"
report_dir="${report_dir:-$default_report}"

declare -A row_title=(
  [plain]="Baseline (Mask R-CNN)"
  [modified_backbone]="Modified backbone (cosine + MaskX)"
  [cas]="Class-aware sampling"
  [rfs]="Repeat-factor sampling"
  [lst]="LST w/o MWG"
  [lst_mwg]="LST w MWG"
)
declare -A row_suffix=([plain]="" [modified_backbone]="_modified_backbone" [cas]="_cas" [rfs]="_rfs")

launcher=(python)
[ "$gpus" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$gpus")

report_rows=()
IFS=',' read -r -a selected <<< "$rows"
for row in "${selected[@]}"; do
  if [ -z "${row_title[$row]+set}" ]; then
    echo "table1.sh: unknown row '$row'; rows: ${!row_title[*]}" >&2
    exit 2
  fi
  if [ "$row" = lst ] || [ "$row" = lst_mwg ]; then
    experiment="$lst_dir"
    mwg_opts=()
    if [ "$row" = lst_mwg ]; then
      experiment="${lst_dir}_mwg"
      mwg_opts=(MODEL.FEW_SHOT.ENABLED True)
      if [ -f "$lst_dir/phases.json" ] && [ "$(python tools/lst_experiment.py "$experiment" state 0)" = "not started" ] \
        && [ "$(python tools/lst_experiment.py "$lst_dir" state 0)" = finished ]; then
        mkdir -p "$experiment"
        cp "$lst_dir/phases.json" "$experiment/"
        cp -r "$(python tools/lst_experiment.py "$lst_dir" path 0 dir)" "$experiment/"
      fi
    fi
    bash lst_scripts/run_phases.sh --config-dir "configs/$benchmark/lst" --output-dir "$experiment" \
      --gpus "$gpus" "${overrides[@]}" "${mwg_opts[@]}"
    last_phase=$(python tools/lst_experiment.py "$experiment" last-phase)
    report_rows+=(--row "${row_title[$row]}=$(python tools/lst_experiment.py "$experiment" path "$last_phase" metrics)")
    continue
  fi
  run_dir="$output_dir/$row"
  metrics="$run_dir/inference/$test_set/metrics.json"
  if [ -f "$metrics" ]; then
    echo "[table1] $row: done ($metrics)"
  else
    echo "[table1] $row: training and testing in $run_dir"
    start=$(date +%s)
    "${launcher[@]}" tools/train_net.py --config-file "$config_prefix${row_suffix[$row]}.yaml" \
      OUTPUT_DIR "$run_dir" "${overrides[@]}"
    echo "[table1] $row: finished in $(( ($(date +%s) - start) / 60 )) min"
  fi
  report_rows+=(--row "${row_title[$row]}=$metrics")
done

python tools/lst_report.py table1 "${report_rows[@]}" --output-dir "$report_dir" \
  --title "Table 1 on $benchmark ($(date +%Y-%m-%d))"
cat "$report_dir/table1.md"
