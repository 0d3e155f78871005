#!/usr/bin/env bash
# The main job: LST's class-incremental phases, chained (paper Algorithm 1; docs/lst.md).
#
#   bash lst_scripts/run_phases.sh                   # the embedded synthetic benchmark, on the CPU
#                                                    # (quick schedule; Table 1's: --config-dir configs/synthetic/lst)
#   bash lst_scripts/run_phases.sh --config-dir configs/lvis/lst --output-dir output/lst/lvis --gpus 8
#
# Steps, each a CLI under tools/: division and replay plans (lst_prepare.py), then for every
# phase t its config (lst_phase_config.py), for t >= 1 the expanded checkpoint of theta_{t-1}
# (lst_expand.py), training and evaluation (train_net.py), and at the end the report
# (lst_report.py phases), whose table is printed.
#
# Options:
#   --config-dir DIR    folder with phase0.yaml and incremental.yaml (default configs/synthetic/lst_quick)
#   --output-dir DIR    the experiment folder (default output/lst/<P> for configs/<P>/lst and
#                       output/lst/<P>_<S> for configs/<P>/lst_<S>, e.g. output/lst/synthetic_quick;
#                       with --seed S other than the config's SEED, <that>_seed<S>)
#   --seed S            the experiment's SEED (default: the config's, 0 for configs/synthetic/);
#                       phase t trains and expands with SEED + t (docs/lst.md, section 1)
#   --gpus N            processes per phase through torchrun (default 1)
#   --phase0-from DIR   start from the finished phase 0 of the experiment DIR, which has the same base
#                       size and SEED (phase 0 depends on nothing else; table3.sh shares it between
#                       the grid points of one base size); trains phase 0 when DIR's is not finished
#   --until-phase K     train the phases up to K only (the report is written once all are done)
#   KEY VALUE ...       after the options: config overrides for every phase
#                       (ablations: MODEL.LST.DISTILL.ENABLED False, MODEL.LST.REPLAY all|none)
# Re-running resumes: finished phases are skipped and an interrupted phase continues from its
# last checkpoint, sampler position included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config_dir=configs/synthetic/lst_quick
output_dir=""
seed=""
gpus=1
phase0_from=""
until_phase=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config-dir) config_dir="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --phase0-from) phase0_from="$2"; shift 2 ;;
    --until-phase) until_phase="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "lst_scripts/$(basename "$0")"; exit 0 ;;
    --*) echo "run_phases.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
overrides=("$@")
if [ -n "$seed" ] && ! [[ "$seed" =~ ^[0-9]+$ ]]; then
  echo "run_phases.sh: --seed takes a seed of 0 or more, got '$seed'" >&2
  exit 2
fi
if [ -n "$until_phase" ] && ! [[ "$until_phase" =~ ^[0-9]+$ ]]; then
  echo "run_phases.sh: --until-phase takes a phase of 0 or more, got '$until_phase'" >&2
  exit 2
fi
if [ -n "$phase0_from" ] && [ ! -d "$phase0_from" ]; then
  echo "run_phases.sh: --phase0-from $phase0_from is not an experiment folder" >&2
  exit 2
fi

source lst_scripts/setup_env.sh

read -r base phase_size quota_rule config_seed train_json < <(python tools/lst_phase_config.py --config-dir "$config_dir" --describe "${overrides[@]}")
if [ -z "$output_dir" ]; then
  config_dir="${config_dir%/}"
  output_dir="output/lst/$(basename "$(dirname "$config_dir")")"
  schedule=$(basename "$config_dir")
  [ "$schedule" != lst ] && output_dir="${output_dir}_${schedule#lst_}"
  [ -n "$seed" ] && [ "$seed" != "$config_seed" ] && output_dir="${output_dir}_seed${seed}"
fi
[ -n "$seed" ] && overrides+=(SEED "$seed")
if [ ! -f "$train_json" ]; then
  case "$train_json" in
    *synthetic_lt*) python tools/make_synthetic_lvis.py --output datasets/synthetic_lt --force ;;
    *) echo "run_phases.sh: the training annotations $train_json do not exist; see INSTALL.md (datasets)" >&2; exit 1 ;;
  esac
fi

echo "[lst] division: base $base, phase size $phase_size, SEED ${seed:-$config_seed}, from $train_json -> $output_dir"
python tools/lst_prepare.py --train-json "$train_json" --base "$base" --phase-size "$phase_size" \
  --quota-rule "$quota_rule" --output-dir "$output_dir"
last_phase=$(python tools/lst_experiment.py "$output_dir" last-phase)
if [ -n "$phase0_from" ]; then
  shared=$(python tools/lst_experiment.py "$output_dir" share-phase0 "$phase0_from")
  if [ "$shared" = copied ]; then
    echo "[lst] phase 0 copied from $phase0_from"
  fi
fi
stop_phase=$last_phase
[ -n "$until_phase" ] && [ "$until_phase" -lt "$last_phase" ] && stop_phase=$until_phase

launcher=(python)
[ "$gpus" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$gpus")

for phase in $(seq 0 "$stop_phase"); do
  if [ "$(python tools/lst_experiment.py "$output_dir" state "$phase")" = finished ]; then
    echo "[lst] phase $phase of $last_phase: done"
    continue
  fi
  echo "[lst] phase $phase of $last_phase: $(date +%H:%M:%S)"
  config=$(python tools/lst_phase_config.py --config-dir "$config_dir" --experiment-dir "$output_dir" \
    --phase "$phase" "${overrides[@]}")
  model_init=$(python tools/lst_experiment.py "$output_dir" path "$phase" model_init)
  if [ "$phase" -gt 0 ] && [ ! -f "$model_init" ]; then
    python tools/lst_expand.py --input "$(python tools/lst_experiment.py "$output_dir" path $((phase - 1)) model_final)" \
      --output "$model_init" --config-file "$config"
  fi
  "${launcher[@]}" tools/train_net.py --config-file "$config"
done

if [ "$stop_phase" -lt "$last_phase" ]; then
  echo "[lst] stopped after phase $stop_phase of $last_phase (--until-phase); rerun without it to go on"
  exit 0
fi
python tools/lst_report.py phases --phases-dir "$output_dir"
