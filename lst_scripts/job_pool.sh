# Sourced by lst_scripts/table1.sh, table3.sh and ablations.sh (bash >= 5.1).
#
# `run_jobs N LOG_DIR FUNCTION JOB...` calls `FUNCTION ARGS...` for every JOB, a string
# "NAME ARGS..." of words without spaces. With N = 1 the jobs run one after the other, their output
# on stderr; otherwise N at a time, each in the background with OMP_NUM_THREADS = cores / N (unless
# OMP_NUM_THREADS is set) and its output appended to LOG_DIR/NAME.log (a resumed job's log keeps
# the earlier attempts). Every job that ends is announced with its wall time. After a failed job no
# new one starts; returns 1 once the running ones end. Call it as a command of its own, never in
# an `if`, `||` or `&&`: bash ignores `set -e` in everything such a command runs, the jobs
# included, so a failing step would not stop its job.
run_jobs() {
  local jobs="$1" log_dir="$2" run="$3" job name args start
  shift 3
  if [ "$jobs" = 1 ]; then
    for job in "$@"; do
      read -r name args <<< "$job"
      start=$SECONDS
      # shellcheck disable=SC2086  # ARGS are words
      "$run" $args >&2
      echo "[$(basename "$0" .sh)] $name done in $(format_duration $((SECONDS - start)))" >&2
    done
    return 0
  fi
  local cores threads failed=0 running=0
  local -A job_name=() job_start=()
  cores=$(nproc)
  threads=${OMP_NUM_THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}
  mkdir -p "$log_dir"
  echo "[$(basename "$0" .sh)] $# jobs, $jobs at a time with OMP_NUM_THREADS=$threads; logs in $log_dir" >&2
  for job in "$@"; do
    if [ "$running" -ge "$jobs" ]; then
      wait_for_a_job || failed=1
      running=$((running - 1))
    fi
    [ "$failed" = 1 ] && break
    read -r name args <<< "$job"
    echo "[$(basename "$0" .sh)] starting $name: $log_dir/$name.log" >&2
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$threads "$run" $args >> "$log_dir/$name.log" 2>&1 &
    job_name[$!]="$name"
    job_start[$!]=$SECONDS
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do
    wait_for_a_job || failed=1
    running=$((running - 1))
  done
  if [ "$failed" = 1 ]; then
    echo "$(basename "$0"): a job failed; its log in $log_dir says why (rerunning resumes)" >&2
    return 1
  fi
}

# Waits for one of run_jobs' background jobs, says which ended, how and after how long; returns
# its exit status.
wait_for_a_job() {
  local pid status=0 outcome
  wait -n -p pid || status=$?
  outcome="done in"
  [ "$status" = 0 ] || outcome="failed (exit $status) after"
  echo "[$(basename "$0" .sh)] ${job_name[$pid]} $outcome $(format_duration $((SECONDS - job_start[$pid])))" >&2
  return "$status"
}

# $1 seconds as "[H h ]M min S s".
format_duration() {
  if [ "$1" -ge 3600 ]; then
    echo "$(($1 / 3600)) h $(($1 % 3600 / 60)) min $(($1 % 60)) s"
  else
    echo "$(($1 / 60)) min $(($1 % 60)) s"
  fi
}

# `record_call_time LOG COMMAND...`: when the script exits, appends a line to LOG (a tab-separated
# calls.log: the UTC time the call started, its wall time in seconds from the script's start, its
# exit status, the command) and prints the wall time. A table spread over several calls (one
# resuming another) took the sum of their times. A call stopped by Ctrl-C or by SIGTERM to its
# process group (`kill -- -PGID`: the trainings too) logs exit 130 or 143.
record_call_time() {
  call_time_log="$1"
  shift
  local word
  call_time_command=""
  for word in "$@"; do  # quoted only where the shell needs it
    if [[ "$word" =~ ^[A-Za-z0-9_./,:=+@%-]+$ ]]; then
      call_time_command+="$word "
    else
      call_time_command+="$(printf '%q' "$word") "
    fi
  done
  call_time_started=$(date -u -d "@$(( $(date +%s) - SECONDS ))" +%Y-%m-%dT%H:%M:%SZ)
  trap 'log_call_time $?' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

log_call_time() {
  local status="$1"
  mkdir -p "$(dirname "$call_time_log")"
  printf '%s\t%d s\texit %d\t%s\n' "$call_time_started" "$SECONDS" "$status" "${call_time_command% }" >> "$call_time_log"
  echo "[$(basename "$0" .sh)] this call took $(format_duration "$SECONDS") (exit $status; logged in $call_time_log)" >&2
}
