# Sourced by lst_scripts/table1.sh, table3.sh and ablations.sh: `run_jobs N LOG_DIR FUNCTION JOB...`
# calls `FUNCTION ARGS...` for every JOB, a string "NAME ARGS..." of words without spaces. With N
# = 1 the jobs run one after the other, their output on stderr; otherwise N at a time, each in the
# background with OMP_NUM_THREADS = cores / N (unless OMP_NUM_THREADS is set) and its output
# appended to LOG_DIR/NAME.log (a resumed job's log keeps the earlier attempts). After a failed job no new one starts; returns 1 once the running ones end.
run_jobs() {
  local jobs="$1" log_dir="$2" run="$3" job name args
  shift 3
  if [ "$jobs" = 1 ]; then
    for job in "$@"; do
      read -r name args <<< "$job"
      # shellcheck disable=SC2086  # ARGS are words
      "$run" $args >&2
    done
    return 0
  fi
  local cores threads failed=0 running=0
  cores=$(nproc)
  threads=${OMP_NUM_THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}
  mkdir -p "$log_dir"
  echo "[$(basename "$0" .sh)] $# jobs, $jobs at a time with OMP_NUM_THREADS=$threads; logs in $log_dir" >&2
  for job in "$@"; do
    if [ "$running" -ge "$jobs" ]; then
      wait -n || failed=1
      running=$((running - 1))
    fi
    [ "$failed" = 1 ] && break
    read -r name args <<< "$job"
    echo "[$(basename "$0" .sh)] starting $name: $log_dir/$name.log" >&2
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$threads "$run" $args >> "$log_dir/$name.log" 2>&1 &
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
  done
  if [ "$failed" = 1 ]; then
    echo "$(basename "$0"): a job failed; its log in $log_dir says why (rerunning resumes)" >&2
    return 1
  fi
}
