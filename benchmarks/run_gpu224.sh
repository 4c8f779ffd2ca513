#!/usr/bin/env bash
# Issue 22's GPU rows: cuda against a ResNet-18 victim at 224 px, from scratch, fine-tuned and linearly
# probed from a backbone pretrained on other data (RESULTS.md, "GPU rows at 224 px").
#
# 1. RN224: torchvision resnet18 (ImageNet stem) trained with labels on CIFAR-10 classes 0-4, train rows
#    [10000, 50000), upscaled to 224 px (Pillow bicubic); never protected, other classes than the victim's.
# 2. The victim's task: classes 5-9 of train rows [0, 10000) and test rows [0, 10000) (about 5k / 5k,
#    5-way), upscaled to 224 px and stored as JPEG 95; cuda kernel_size=7, dilation=7, reflect at three
#    keys (plus cuda's defaults under the fine-tune), against
#      finetune:     RN224 fine-tuned whole (the harness's finetune attacker, peak lr 0.01)
#      linear-probe: logistic regression on RN224's frozen pooled features
#      scratch:      a torchvision resnet18 trained from random init at 224 px
# Every job runs in parallel on one GPU; each is stopped at DEADLINE seconds after the start, so a slow
# run leaves the others' results. Sizes are variables so the same script runs tiny on a CPU:
#   DEV=cpu TRAIN_SIZE=60 TEST_SIZE=40 PRE_ROWS=10000:10200 PRE_EPOCHS=1 FT_EPOCHS=1 SC_EPOCHS=1 bash benchmarks/run_gpu224.sh
set -u
PRE_ROWS=${PRE_ROWS:-10000:50000}; PRE_EPOCHS=${PRE_EPOCHS:-10}
DEADLINE=${DEADLINE:-480}                  # seconds after the start at which every job is stopped
. "$(dirname "$0")/gpu224_jobs.sh"         # PY DEV DATA R BB sizes, left, job, K7D7R
mkdir -p "$(dirname "$R")" "$(dirname "$BB")"

# the pretraining, and meanwhile the from-scratch victims (they need no backbone)
timeout "$(left)" $PY benchmarks/build_tv_surrogate.py --arch resnet18 --classes 0-4 --train-rows "$PRE_ROWS" \
  --image-size 224 --upscale --epochs "$PRE_EPOCHS" --batch-size 128 --lr 0.1 --device "$DEV" --data "$DATA" \
  --out "$BB" > "$R-build.log" 2>&1 &
PRE=$!
SC="--attacker scratch --arch resnet18 --epochs $SC_EPOCHS"
job scratch-k7d7r $SC --methods clean cuda $K7D7R
job scratch-k7d7r-key2 $SC --methods cuda $K7D7R --bank-seed 4321
job scratch-k7d7r-key3 $SC --methods cuda $K7D7R --bank-seed 99
wait "$PRE" || echo "pretraining failed or stopped: see $R-build.log"
echo "pretraining done at $(( $(date +%s) - T0 )) s"

if [ -f "$BB" ]; then
  FT="--attacker finetune --backbone tv:resnet18@$BB --epochs $FT_EPOCHS"
  PR="--attacker linear-probe --backbone tv:resnet18@$BB --epochs $PROBE_EPOCHS"
  job ft-k7d7r $FT --methods clean cuda $K7D7R
  job ft-k7d7r-key2 $FT --methods cuda $K7D7R --bank-seed 4321
  job ft-k7d7r-key3 $FT --methods cuda $K7D7R --bank-seed 99
  job ft-cuda $FT --methods cuda
  job probe-k7d7r $PR --methods clean cuda $K7D7R
  job probe-k7d7r-key2 $PR --methods cuda $K7D7R --bank-seed 4321
  job probe-k7d7r-key3 $PR --methods cuda $K7D7R --bank-seed 99
fi
wait
echo "all done at $(( $(date +%s) - T0 )) s"
for f in "$R"-*.log; do echo "== $f"; tail -n 4 "$f"; done
