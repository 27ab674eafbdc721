#!/usr/bin/env bash
# Run ingest -> preprocess -> train -> evaluate with a given params file on a machine that has
# torch but not the rest of the toolchain (e.g. a bare GPU box): no DVC, no MLflow
# (SKINDX_TRACKING=off), and validation taken from a summary made elsewhere on the same data.
# On a full install use `dvc exp run -S experiment=full` instead.
#   usage: scripts/run_stages_without_dvc.sh PARAMS_FILE VALIDATION_SUMMARY [RESULTS_DIR]
set -euo pipefail
params=$1 summary=$2 results=${3:-reports/runs/$(basename "$params" .yaml)}
export SKINDX_TRACKING=off PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
cp "$params" params.yaml
start=$(date +%s)
[ -f data/raw/manifest.json ] || $PY pipelines/ingest.py
mkdir -p reports/validation && cp "$summary" reports/validation/summary.json
$PY pipelines/preprocess.py
t_train=$(date +%s)
$PY pipelines/train.py
$PY pipelines/evaluate.py
end=$(date +%s)
mkdir -p "$results"
cp reports/metrics.json reports/train/history.csv reports/calibration/temperature.json "$results"/
cp reports/plots/images/*.png "$results"/ 2>/dev/null || true
printf '{"params": "%s", "seconds_total": %d, "seconds_train_evaluate": %d}\n' \
  "$params" $((end - start)) $((end - t_train)) > "$results/timing.json"
echo "results in $results: $(cat "$results/timing.json")"
