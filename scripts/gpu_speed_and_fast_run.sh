#!/usr/bin/env bash
# One GPU session's work for the speed issue: benchmark the training step in several modes,
# profile it, then train WRN-28-3.5 on the full CIFAR-10 with the fastest mode.
#
#   OUT=/some/folder CIFAR10_DIR=/path/to/cifar10 scripts/gpu_speed_and_fast_run.sh
#
# Everything lands in $OUT (at most 8 files, two levels deep, as the GPU tool returns them):
#   bench/bench.json  bench/profile.txt  log.txt  <run name>/{config,env,summary}.json, metrics.csv, model_fp16.pt
# TRAIN_BUDGET_S sets the training time the epoch count is sized to, from the measured compiled
# throughput (the test set plays no part in it); EPOCHS=N skips the benchmark and trains N epochs.
# QUICK=1 shrinks everything for a CPU dry run. CUTOUT=0 reproduces the first H200 run
# (results/runs/wrn28-3.5-fast-h200, 94.25 %), whose ~100 % final training accuracy pointed to
# Cutout 16 (results/runs/wrn28-3.5-cutout-h200, 95.56 %).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
: "${CIFAR10_DIR:?set CIFAR10_DIR to the full CIFAR-10}"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
BUDGET=${TRAIN_BUDGET_S:-150}
NAME=${RUN_NAME:-wrn28-3.5-fast}
mkdir -p "$OUT/bench"
exec > >(tee "$OUT/log.txt") 2>&1

if [ "${QUICK:-0}" = 1 ]; then
  MODEL=(--depth 10 --width 1); BATCH=64; STEPS=3; WARM=1; MODES=fp32,bf16; TRAIN_EXTRA=(--train-limit 512 --test-limit 200 --val-size 200)
  MIN_EPOCHS=1; MAX_EPOCHS=2
else
  MODEL=(--depth 28 --width 3.5); BATCH=512; STEPS=40; WARM=5; MODES=fp32,bf16-nchw,bf16,bf16-compile; TRAIN_EXTRA=()
  MIN_EPOCHS=30; MAX_EPOCHS=100
fi

date -u; nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv || true
$PY -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__)"

if [ -z "${EPOCHS:-}" ]; then
echo "== benchmark (batch $BATCH) =="
$PY -m wrnlib bench "${MODEL[@]}" --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARM" --modes "$MODES" \
  --out "$OUT/bench" --profile-out "$OUT/bench/profile.txt"
echo "== batch-size scaling, bf16 eager =="
$PY -m wrnlib bench "${MODEL[@]}" --batch-size $((BATCH * 2)) --steps "$STEPS" --warmup "$WARM" --modes bf16
rm -f "$OUT/bench/bench.md"  # rebuilt from bench.json at home; keeps the file count under the limit

EPOCHS=$($PY - "$OUT/bench/bench.json" "$BUDGET" "$MIN_EPOCHS" "$MAX_EPOCHS" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
fastest = max(results, key=lambda r: r["train_images_per_s"])
epochs = int(float(sys.argv[2]) / fastest["epoch_time_s"])
print(max(int(sys.argv[3]), min(int(sys.argv[4]), epochs)))
EOF
)
fi
# The first H200 session measured eager bf16 + channels_last faster than torch.compile at batch 512
# (36.5k vs 33.9k img/s), so training runs eager unless COMPILE=--compile.
COMPILE=${COMPILE:---no-compile}
echo "== training $NAME for $EPOCHS epochs (sized to ${BUDGET}s of training) =="
$PY -m wrnlib train "${MODEL[@]}" "${TRAIN_EXTRA[@]}" --name "$NAME" --out-dir "$OUT" --epochs "$EPOCHS" \
  --batch-size "$BATCH" --lr 0.4 --momentum 0.9 --nesterov --weight-decay 5e-4 --no-decay-bn-bias \
  --label-smoothing 0.1 --schedule cosine --warmup-epochs 2 --crop-padding 4 --pad-mode reflect --flip --cutout "${CUTOUT:-16}" \
  $COMPILE --channels-last --precision auto --checkpoint-every 0 --save-model --no-progress
rm -f "$OUT/$NAME/state.pt"  # 36 MB of optimiser state: not needed to check the result
$PY -m wrnlib evaluate "$OUT/$NAME"
ls -la "$OUT" "$OUT/bench" "$OUT/$NAME"
date -u
