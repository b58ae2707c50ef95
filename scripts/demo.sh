#!/usr/bin/env bash
# The main job on an embedded default: a small synthetic dataset in Kaggle's layout (or DATA=/path/to/kaggle),
# then the pipeline on it. Called by `make demo`; PY, DATA and DEMO_DIR come from the Makefile.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-runs/demo}
DATA=${DATA:-}
mkdir -p "$DEMO_DIR"

if [ -z "$DATA" ]; then
  DATA="$DEMO_DIR/data"
  if [ ! -f "$DATA/sample_submission.csv" ]; then
    echo "== synthetic dataset -> $DATA"
    rm -rf "$DATA"
    "$PY" -m datasets.synthetic --out "$DATA" --train 800 --test 400 --seed 0
  else
    echo "== synthetic dataset: reusing $DATA"
  fi
fi

echo "== baseline submissions for the training set"
"$PY" -m tgs.submission --empty --ids "$DATA/train.csv" --out "$DEMO_DIR/empty-submission.csv"
"$PY" -m tgs.submission --masks "$DATA/train/masks" --out "$DEMO_DIR/perfect-submission.csv"

echo "== score: all-empty submission (the baseline every model must beat)"
"$PY" score.py "$DEMO_DIR/empty-submission.csv" --truth "$DATA/train.csv"
echo "== score: submission encoded from the mask PNGs (must be 1.000000: checks PNG decoding and RLE)"
"$PY" score.py "$DEMO_DIR/perfect-submission.csv" --truth "$DATA/train.csv" --per-image "$DEMO_DIR/perfect-per-image.csv"

echo "== check: an all-empty test-set submission against sample_submission.csv"
"$PY" -m tgs.submission --empty --ids "$DATA/sample_submission.csv" --out "$DEMO_DIR/fold0-submission.csv"
"$PY" score.py "$DEMO_DIR/fold0-submission.csv" --check "$DATA"
echo "== demo done: files in $DEMO_DIR"
