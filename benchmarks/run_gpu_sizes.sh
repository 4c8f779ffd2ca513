#!/usr/bin/env bash
# Issue 22 item 4, GPU rows: which dilation cuda's 7 x 7 reflect filters need at each image size, against
# the ResNet-18 victim of run_gpu224.sh (RESULTS.md, "Filter spacing across sizes on the GPU").
#
# The victim's task is run_gpu224.sh's (CIFAR-10 classes 5-9 of train rows [0, 10000), tested on test rows
# [0, 10000), 5-way), upscaled to RES px and stored as JPEG 95. At each size two spacings: the image's
# detail scale (dilation = RES / 32: the size the CIFAR detail was upscaled to) and another, against
#   scratch:  a torchvision resnet18 trained from random init at RES px
#   finetune: RN224 (run_gpu224.sh step 1; BB) fine-tuned whole, reading the images resized to 224 px, as a
#             user fine-tuning an ImageNet-style backbone does, whatever the size published
# Key 1234 (the weakest key at 32 / 96 / 224 px so far); PART=2 runs two more keys. Every job runs in parallel on one GPU and is
# stopped at DEADLINE seconds after the start. Tiny on a CPU:
#   DEV=cpu TRAIN_SIZE=60 TEST_SIZE=40 FT_EPOCHS=1 SC_EPOCHS=1 BB=<a tv:resnet18 file> bash benchmarks/run_gpu_sizes.sh
set -u
DEADLINE=${DEADLINE:-420}
R=${R:-benchmarks/results/gpusz}
. "$(dirname "$0")/gpu224_jobs.sh"         # PY DEV DATA R BB sizes, left, job
mkdir -p "$(dirname "$R")"
SC="--attacker scratch --arch resnet18 --epochs $SC_EPOCHS"
FT="--attacker finetune --backbone tv:resnet18@$BB --epochs $FT_EPOCHS"
k7r() { echo "--param cuda.kernel_size=7 --param cuda.dilation=$1 --param cuda.padding=reflect"; }

# NAME SIZE DETAIL-DILATION OTHER-DILATION: clean + the detail spacing in one job, the other spacing in another
size() {
  local name=$1 d1=$3 d2=$4; RES=$2
  [ "$RES" -le 224 ] && { job sc$name-d$d1 $SC --methods clean cuda $(k7r "$d1")
                          [ "$d2" != - ] && job sc$name-d$d2 $SC --methods cuda $(k7r "$d2"); }
  job ft$name-d$d1 $FT --methods clean cuda $(k7r "$d1")
  [ "$d2" != - ] && job ft$name-d$d2 $FT --methods cuda $(k7r "$d2")
}
if [ "${PART:-1}" = 1 ]; then
  size 96 96 3 6
  size 160 160 5 7
  size 224 224 3 -      # d 7 at 224 px: run_gpu224.sh's rows
  size 448 448 14 7     # fine-tune only (it reads 224 px); a resnet18 from scratch at 448 px is too slow here
else
  # PART=2: the wider spacing of part 1 (d 6 at 96 px, d 7 at 160 px) at two more keys; the clean rows are part 1's
  for key in 4321 99; do
    RES=96;  job sc96-d6-key$key $SC --methods cuda $(k7r 6) --bank-seed $key
             job ft96-d6-key$key $FT --methods cuda $(k7r 6) --bank-seed $key
    RES=160; job sc160-d7-key$key $SC --methods cuda $(k7r 7) --bank-seed $key
             job ft160-d7-key$key $FT --methods cuda $(k7r 7) --bank-seed $key
  done
fi
wait
echo "all done at $(( $(date +%s) - T0 )) s"
for f in "$R"-*.log; do echo "== $f"; tail -n 3 "$f"; done
