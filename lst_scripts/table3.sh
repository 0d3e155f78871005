#!/usr/bin/env bash
# Table 3 of the paper: LST (w/o MWG) for several base sizes b and phase sizes, each a full
# lst_scripts/run_phases.sh experiment, gathered into REPORT_DIR/table3.md, table3.json and
# table3_ap_per_bin.png (the final phase's metrics of each; AP is the paper's column).
#
#   bash lst_scripts/table3.sh                  # the synthetic benchmark (64 classes)
#   bash lst_scripts/table3.sh --lvis --gpus 8  # LVIS v0.5, the paper's grid
#
# The paper's grid on LVIS v0.5's 1,230 classes: b/phase size 110/160, 270/160, 270/320, 270/480,
# 270/960, 590/160, 590/320. On the 64 synthetic classes the same fractions of the classes:
# 6/8, 14/8, 14/17, 14/25, 14/50, 31/8, 31/17.
#
# Options:
#   --lvis              LVIS v0.5 with configs/lvis/lst instead of configs/synthetic/lst
#   --grid "b/s ..."    the (base size)/(phase size) pairs to run (default: as above)
#   --output-dir DIR    experiments go to DIR/b<b>_s<s> (default output/table3/<synthetic|lvis>)
#   --seeds N           run every pair with SEED 0 .. N-1 (experiments DIR/b<b>_s<s>_seed<seed>):
#                       mean ± sample standard deviation over the seeds (default: the config's SEED)
#   --report-dir DIR    default report (synthetic) or report/lvis
#   --gpus N            processes per phase through torchrun (default 1)
#   KEY VALUE ...       after the options: config overrides for every phase of every run
# Re-running resumes every experiment where it stopped.
set -euo pipefail
shopt -s inherit_errexit  # a failing run inside $(...) stops the script
cd "$(dirname "${BASH_SOURCE[0]}")/.."

benchmark=synthetic
grid=""
output_dir=""
report_dir=""
num_seeds=""
gpus=1
while [ $# -gt 0 ]; do
  case "$1" in
    --lvis) benchmark=lvis; shift ;;
    --grid) grid="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --seeds) num_seeds="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "table3.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")
if [ -n "$num_seeds" ] && ! [[ "$num_seeds" =~ ^[1-9][0-9]*$ ]]; then
  echo "table3.sh: --seeds takes a number of seeds of 1 or more, got '$num_seeds'" >&2
  exit 2
fi
seeds=("")
[ -n "$num_seeds" ] && seeds=($(seq 0 $((num_seeds - 1))))
if [ "$benchmark" = lvis ]; then
  grid="${grid:-110/160 270/160 270/320 270/480 270/960 590/160 590/320}"
  report_dir="${report_dir:-report/lvis}"
else
  grid="${grid:-6/8 14/8 14/17 14/25 14/50 31/8 31/17}"
  report_dir="${report_dir:-report}"
fi
output_dir="${output_dir:-output/table3/$benchmark}"

source lst_scripts/setup_env.sh
report_rows=()
for pair in $grid; do
  base="${pair%/*}"
  phase_size="${pair#*/}"
  files=()
  for seed in "${seeds[@]}"; do
    experiment="$output_dir/b${base}_s${phase_size}${seed:+_seed$seed}"
    echo "[table3] b $base, phase size $phase_size${seed:+, seed $seed} -> $experiment"
    seed_opts=()
    [ -n "$seed" ] && seed_opts=(--seed "$seed")
    bash lst_scripts/run_phases.sh --config-dir "configs/$benchmark/lst" --output-dir "$experiment" \
      "${seed_opts[@]}" --gpus "$gpus" "${overrides[@]}" MODEL.LST.BASE_SIZE "$base" MODEL.LST.PHASE_SIZE "$phase_size"
    num_phases=$(python tools/lst_experiment.py "$experiment" last-phase)
    files+=("$(python tools/lst_experiment.py "$experiment" path "$num_phases" metrics)")
  done
  phases_word=phases
  [ "$num_phases" = 1 ] && phases_word=phase
  report_rows+=(--row "b $base, phase size $phase_size ($num_phases $phases_word)=$(IFS=','; echo "${files[*]}")")
done

python tools/lst_report.py table1 --name table3 "${report_rows[@]}" --output-dir "$report_dir" \
  --title "Table 3 on $benchmark: base size and phase size (LST w/o MWG, final phase)"
