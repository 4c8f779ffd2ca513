#!/usr/bin/env bash
# Issue 22's GPU rows, part 2: cudatap (cuda's k7 d7 reflect filters + tap's targeted noise crafted
# through a pretrained surrogate) against the ResNet-18 victim at 224 px of run_gpu224.sh, and a second
# training seed for that script's key-1234 fine-tune row (RESULTS.md, "GPU rows at 224 px").
#
# 1. FIT224, the surrogate the noise is crafted through (never the attacker's): torchvision resnet34 (another
#    architecture than the attacker's resnet18) trained with labels on CIFAR-10 classes 5-9 of train rows
#    [10000, 30000) (other rows than the protected [0, 10000); other classes than RN224's 0-4), 224 px.
# 2. cudatap, fitted in each job (20 PGD steps, flip+crop, eps 8/255) on the victim's rows, against RN224
#    fine-tuned, RN224 probed, and a resnet18 from scratch: RN224 = BB (run_gpu224.sh step 1).
# Sizes are variables so the same script runs tiny on a CPU (see run_gpu224.sh).
set -u
FITBB=${FITBB:-/tmp/gpu224/fit224-resnet34.safetensors}
FIT_ROWS=${FIT_ROWS:-10000:30000}; FIT_EPOCHS=${FIT_EPOCHS:-8}
DEADLINE=${DEADLINE:-450}
. "$(dirname "$0")/gpu224_jobs.sh"         # PY DEV DATA R BB sizes, left, job, K7D7R
mkdir -p "$(dirname "$R")" "$(dirname "$FITBB")"

FT="--attacker finetune --backbone tv:resnet18@$BB --epochs $FT_EPOCHS"
PR="--attacker linear-probe --backbone tv:resnet18@$BB --epochs $PROBE_EPOCHS"
SC="--attacker scratch --arch resnet18 --epochs $SC_EPOCHS"

timeout "$(left)" $PY benchmarks/build_tv_surrogate.py --arch resnet34 --classes 5-9 --train-rows "$FIT_ROWS" \
  --image-size 224 --upscale --epochs "$FIT_EPOCHS" --batch-size 128 --lr 0.1 --device "$DEV" --data "$DATA" \
  --out "$FITBB" > "$R-build-fit224.log" 2>&1 &
PRE=$!
# meanwhile: a second training seed for run_gpu224.sh's key-1234 fine-tune row
job ft-k7d7r-seed1 $FT --seed 1 --methods clean cuda $K7D7R

wait "$PRE" || echo "surrogate training failed or stopped: see $R-build-fit224.log"
echo "surrogate done at $(( $(date +%s) - T0 )) s"

if [ -f "$FITBB" ]; then
  TAP="--param cudatap.backbone=tv:resnet34@$FITBB --param cudatap.kernel_size=7 --param cudatap.dilation=7 --param cudatap.padding=reflect"
  # clean after cudatap, under the same RN224 file (the GPU run carries it as float16 and widens it back)
  job ft-cudatap $FT --methods cudatap clean $TAP
  job probe-cudatap $PR --methods cudatap clean $TAP
  job scratch-cudatap $SC --methods cudatap $TAP
fi
wait
echo "all done at $(( $(date +%s) - T0 )) s"
for f in "$R"-*.log; do echo "== $f"; tail -n 4 "$f"; done
