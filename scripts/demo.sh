#!/usr/bin/env bash
# The main job on an embedded default: a small synthetic dataset in Kaggle's layout (or DATA=/path/to/kaggle),
# then the whole pipeline on it with a small model and two folds:
#   train -> swa -> test (flip TTA, fold averaging) -> submission -> score.py --check -> out-of-fold score -> reports.
# Called by `make demo`; PY, DATA and DEMO_DIR come from the Makefile. A second run reuses finished folds.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-runs/demo}
DATA=${DATA:-}
ENS="$DEMO_DIR/ens"
if [ -n "$DATA" ]; then ENS="$DEMO_DIR/ens-real"; fi  # real-data folds never share a folder with synthetic ones
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

echo "== sanity: a submission encoded from the mask PNGs must score 1.000000 (PNG decoding + RLE vs train.csv)"
"$PY" -m tgs.submission --masks "$DATA/train/masks" --out "$DEMO_DIR/perfect-submission.csv"
"$PY" score.py "$DEMO_DIR/perfect-submission.csv" --truth "$DATA/train.csv" | head -1

echo "== mosaics (once), then train, average (SWA) and ensemble two folds of a small model (a few minutes on 2 cores)"
"$PY" ensemble.py --data-dir "$DATA" --run-dir "$ENS" --folds fold0,fold1 --modes resize --resize-size 64 --mosaics -- \
  --basenet unet --encoder-width 8 --decoder-channels 16 --center-channels 32 --input-upsample 1 --oc center \
  --batch-size 16 --learning-rate 3e-3 --warmup-epochs 2 --max-epochs 6 --dataload-workers-nums 1 --device cpu

echo "== one fold alone: test.py with flip TTA on fold0's SWA model"
"$PY" test.py --tta "$ENS/resize/fold0_swa.pth" --output-prefix "$DEMO_DIR/fold0" --device cpu
"$PY" score.py "$DEMO_DIR/fold0-submission.csv" --check "$DATA"

echo "== the all-empty baseline on the same out-of-fold images, to compare with the out-of-fold score above"
"$PY" -m tgs.submission --empty --ids "$DATA/train.csv" --out "$DEMO_DIR/empty-submission.csv"
"$PY" -c "
import numpy as np, sys
from tgs import probabilities
from tgs.submission import read_truth
oof = probabilities.load('$ENS/oof-probabilities.npz')
ids, masks = read_truth('$DATA/train.csv')
empty = ~masks.reshape(len(masks), -1).any(axis=1)
keep = np.isin(ids, oof.ids)
print(f'all-empty baseline on the {keep.sum()} out-of-fold images: {empty[keep].mean():.6f}')
"

echo "== reports (PNG plots and CSV tables)"
"$PY" report.py "$ENS/resize/fold0"
"$PY" report.py --probabilities "$ENS/oof-probabilities.npz" --truth "$DATA/train.csv" --mosaics "$ENS/mosaics/mosaics.csv"

echo "== demo done: submissions $ENS/ensemble-submission.csv and $DEMO_DIR/fold0-submission.csv; reports in $ENS"
