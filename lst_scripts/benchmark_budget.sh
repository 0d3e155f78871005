# Sourced by lst_scripts/table1.sh, table3.sh and ablations.sh: where a benchmark's configs, runs
# and reports live. `resolve_budget BENCHMARK BUDGET` (synthetic or lvis; for synthetic a budget
# of 1000 or 3000 iterations of 8 images per Table 1 row, "" = 1000) sets
#   budget_configs  the folder of the baseline configs, with the LST chain's configs in lst/
#   run_name        the name of the runs' folders under output/<table1|table3|lst|ablations>/
#   report_root     the folder of the reports
# and returns 2, with a message, for an unknown budget or a budget given with lvis.
resolve_budget() {
  local benchmark="$1" budget="$2"
  if [ "$benchmark" = lvis ]; then
    if [ -n "$budget" ]; then
      echo "$(basename "$0"): --budget is for the synthetic benchmark; LVIS trains the paper's schedules (configs/lvis)" >&2
      return 2
    fi
    budget_configs=configs/lvis run_name=lvis report_root=report/lvis
    return 0
  fi
  case "${budget:-1000}" in
    1000) budget_configs=configs/synthetic/budget_1000 run_name=synthetic_budget_1000 report_root=report ;;
    3000) budget_configs=configs/synthetic run_name=synthetic report_root=report/budget_3000 ;;
    *) echo "$(basename "$0"): --budget is 1000 or 3000 (iterations), got '$budget'" >&2; return 2 ;;
  esac
}
