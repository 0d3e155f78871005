# Sourced by lst_scripts/table1.sh, table3.sh and ablations.sh: `resolve_seeds NUM_SEEDS ONLY_SEEDS`
# (the values of --seeds and --only-seeds, "" when not given) sets
#   seeds        the seeds of the report: 0 .. NUM_SEEDS-1, or ("") for the configs' SEED
#   train_seeds  the seeds to train here: ONLY_SEEDS (comma-separated, among seeds) or all of seeds
#   seeds_title  for a report's title: ", seed 0", ", seeds 0-2", or "" for the configs' SEED
# and returns 2, with a message, for a malformed value.
resolve_seeds() {
  local num_seeds="$1" only_seeds="$2" seed script
  script=$(basename "$0")
  if [ -z "$num_seeds" ]; then
    seeds=("")
    if [ -n "$only_seeds" ]; then
      echo "$script: --only-seeds picks among the seeds of --seeds N; give --seeds too" >&2
      return 2
    fi
  elif [[ "$num_seeds" =~ ^[1-9][0-9]*$ ]]; then
    seeds=($(seq 0 $((num_seeds - 1))))
  else
    echo "$script: --seeds takes a number of seeds of 1 or more, got '$num_seeds'" >&2
    return 2
  fi
  seeds_title=""
  if [ "$num_seeds" = 1 ]; then
    seeds_title=", seed 0"
  elif [ -n "$num_seeds" ]; then
    seeds_title=", seeds 0-$((num_seeds - 1))"
  fi
  train_seeds=("${seeds[@]}")
  [ -z "$only_seeds" ] && return 0
  IFS=',' read -r -a train_seeds <<< "$only_seeds"
  for seed in "${train_seeds[@]}"; do
    if ! [[ "$seed" =~ ^[0-9]+$ ]] || [ "$seed" -ge "$num_seeds" ]; then
      echo "$script: --only-seeds takes seeds among 0 .. $((num_seeds - 1)) (--seeds $num_seeds), got '$seed'" >&2
      return 2
    fi
  done
}
