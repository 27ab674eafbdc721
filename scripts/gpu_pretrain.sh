#!/usr/bin/env bash
# From-scratch against SimCLR-pretrained initialisation, `full` profile (ResNet-50, 224 px, every
# image), on one GPU, within 12 minutes (docs/pretraining.md). Two steps:
#
#   1. here, on a full install (Hydra, DVC, Great Expectations):
#        scripts/gpu_pretrain.sh prepare /tmp/gpu-pretrain
#      composes params-scratch.yaml and params-pretrain.yaml (the same profile, seed and recipe;
#      the second adds pretrain=simclr) and a validation summary of the same data;
#   2. on the GPU machine (torch is enough: no DVC, MLflow off), with the data folder along:
#        SKINDX_DATA_DIR=.../ham10000 scripts/gpu_pretrain.sh run /tmp/gpu-pretrain [RESULTS_DIR]
#      ingest + preprocess once, then train+evaluate from scratch, then pretrain + train +
#      evaluate from the backbone; metrics, histories, the pretrain manifest and timings go to
#      RESULTS_DIR (default docs/results/gpu-pretrain-<date>).
#
# Budget on one H200 (measured for the full profile: 4.6 s an epoch of training with validation):
# preprocess ~1 min, scratch train+evaluate ~3.5 min, pretraining PRETRAIN_EPOCHS (default 25)
# epochs of 2 x 7,011 views at batch 256, ~8 s each, ~3.5 min, pretrained train+evaluate
# ~3.5 min: ~11.5 min. SKIP_SCRATCH=1 drops the baseline (then compare with an earlier one run
# at the same commit). Profile, epochs and extra overrides are settable for a CPU smoke run:
#   PROFILE=quick PRETRAIN_EPOCHS=1 EXTRA="pretrain.max_steps_per_epoch=2" scripts/gpu_pretrain.sh prepare DIR
set -euo pipefail
cmd=${1:?usage: scripts/gpu_pretrain.sh prepare|run DIR [RESULTS_DIR]}
dir=${2:?usage: scripts/gpu_pretrain.sh prepare|run DIR [RESULTS_DIR]}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

case "$cmd" in
prepare)
  profile=${PROFILE:-full} epochs=${PRETRAIN_EPOCHS:-25}
  # batch 256 for the contrastive loss (more negatives) where the GPU has the memory
  pretrain_batch=${PRETRAIN_BATCH:-256} pretrain_lr=${PRETRAIN_LR:-0.002}
  [ "$profile" = full ] || pretrain_batch=${PRETRAIN_BATCH:-16}
  read -r -a extra <<<"${EXTRA:-}"
  mkdir -p "$dir"
  compose() { # compose conf/ with overrides into a params file, params.yaml left as it is
    local out=$1
    shift
    $PY -c 'import sys; from skindx.config import compose_config, write_params; write_params(compose_config(sys.argv[2:]), sys.argv[1])' "$out" "$@"
  }
  compose "$dir/params-scratch.yaml" "experiment=$profile" "${extra[@]}"
  compose "$dir/params-pretrain.yaml" "experiment=$profile" pretrain=simclr \
    "pretrain.epochs=$epochs" "pretrain.batch_size=$pretrain_batch" "pretrain.lr=$pretrain_lr" \
    "${extra[@]}"
  [ -f data/raw/manifest.json ] || $PY pipelines/ingest.py
  $PY pipelines/validate.py
  cp reports/validation/summary.json "$dir/summary.json"
  echo "prepared $dir: params-scratch.yaml, params-pretrain.yaml, summary.json"
  ;;
run)
  results=${3:-docs/results/gpu-pretrain-$(date -u +%Y%m%d)}
  export SKINDX_TRACKING=off
  mkdir -p "$results"
  log="$results/run.log"
  {
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
    start=$(date +%s)
    cp "$dir/params-scratch.yaml" params.yaml
    [ -f data/raw/manifest.json ] || $PY pipelines/ingest.py
    mkdir -p reports/validation && cp "$dir/summary.json" reports/validation/summary.json
    $PY pipelines/preprocess.py
    t0=$(date +%s)
    if [ "${SKIP_SCRATCH:-0}" != 1 ]; then
      $PY pipelines/pretrain.py # off: the marker only, as in every profile
      $PY pipelines/train.py
      $PY pipelines/evaluate.py
      mkdir -p "$results/scratch"
      cp reports/metrics.json reports/train/history.csv "$results/scratch/"
    fi
    t1=$(date +%s)
    cp "$dir/params-pretrain.yaml" params.yaml
    $PY pipelines/pretrain.py
    t2=$(date +%s)
    $PY pipelines/train.py
    $PY pipelines/evaluate.py
    t3=$(date +%s)
    mkdir -p "$results/pretrained"
    cp reports/metrics.json reports/train/history.csv "$results/pretrained/"
    cp models/pretrain/pretrain.json "$results/pretrained/pretrain.json"
    cp models/pretrain/history.csv "$results/pretrained/pretrain_history.csv"
    printf '{"seconds_total": %d, "seconds_preprocess": %d, "seconds_scratch": %d, "seconds_pretrain": %d, "seconds_pretrained_train_evaluate": %d}\n' \
      $((t3 - start)) $((t0 - start)) $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) >"$results/timing.json"
    "$PY" - "$results" <<'EOF'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
rows = {}
for name in ("scratch", "pretrained"):
    path = results / name / "metrics.json"
    if path.is_file():
        m = json.loads(path.read_text())
        rows[name] = {k: m.get(k) for k in (
            "balanced_accuracy", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
            "macro_f1", "melanoma_sensitivity", "roc_auc_macro", "best_epoch")}
(results / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=2))
EOF
    echo "timing: $(cat "$results/timing.json")"
  } 2>&1 | tee "$log"
  ;;
*)
  echo "usage: scripts/gpu_pretrain.sh prepare|run DIR [RESULTS_DIR]" >&2
  exit 2
  ;;
esac
