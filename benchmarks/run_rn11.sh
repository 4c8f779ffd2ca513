#!/usr/bin/env bash
# A strided-stem ResNet pretrained on other data (issue 22, session 11): RN04 = torchvision resnet18 (ImageNet
# stem: 7x7 stride-2 conv + max-pool) trained from scratch with labels on CIFAR-10 classes 0-4 only (airplane,
# automobile, bird, cat, deer), train rows [10000, 50000) (never protected), upscaled (Pillow bicubic) to 64 px.
# The protected task is CLS04's (benchmarks/run_cls04.sh): classes 5-9 only, 5-way, 224 px. The random-init
# control is the same architecture from torchvision at init seed 0 ('tv:resnet18@random', its 1000-way head,
# which the probe drops anyway).
# STEPS picks the parts: build clean rnd-clean k5d7r k5d7r-k2 k5d7r-k3 cuda (default: all, in that order), and
# the extra rows s64-clean s64-k5d7r s64-k5d7r-k2 s64-k5d7r-k3 d7r rnd-k5d7r (bank seeds: 1234, k2 = 4321, k3 = 99; s64: the same backbone
# reading the 224-px images resized down to 64 px, its training side).
# Outputs: benchmarks/results/rn11-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
RN04=${RN04:-/tmp/rn11/rn04-resnet18-s64.safetensors}
R=benchmarks/results/rn11
N="nice -n 5 env OMP_NUM_THREADS=1"
B224="$N $PY benchmarks/bench_protection.py --threads 1 --classes 5-9 --train-size 6000 --test-size 2000 --defences none --resolution 224 --attacker linear-probe --epochs 8"
K5D7R="--param cuda.kernel_size=5 --param cuda.dilation=7 --param cuda.padding=reflect"
for step in ${STEPS:-build clean rnd-clean k5d7r k5d7r-k2 k5d7r-k3 cuda}; do
  case $step in
    build) $N $PY benchmarks/build_tv_surrogate.py --arch resnet18 --classes 0-4 --train-rows 10000:50000 \
             --image-size 64 --upscale --epochs 5 --batch-size 64 --lr 0.1 --out "$RN04" ;;
    clean)     $B224 --backbone "tv:resnet18@$RN04" --methods clean --out $R-p224-clean.json ;;
    rnd-clean) $B224 --backbone tv:resnet18@random --allow-random-backbone --methods clean --out $R-p224-random-clean.json ;;
    k5d7r)     $B224 --backbone "tv:resnet18@$RN04" --methods cuda $K5D7R --out $R-p224-cuda-k5-d7-reflect.json ;;
    k5d7r-k2)  $B224 --backbone "tv:resnet18@$RN04" --methods cuda $K5D7R --bank-seed 4321 --out $R-p224-cuda-k5-d7-reflect-key2.json ;;
    k5d7r-k3)  $B224 --backbone "tv:resnet18@$RN04" --methods cuda $K5D7R --bank-seed 99 --out $R-p224-cuda-k5-d7-reflect-key3.json ;;
    cuda)      $B224 --backbone "tv:resnet18@$RN04" --methods cuda --out $R-p224-cuda.json ;;
    s64-clean) $B224 --backbone "tv:resnet18@$RN04" --backbone-size 64 --methods clean --out $R-p224-s64-clean.json ;;
    s64-k5d7r) $B224 --backbone "tv:resnet18@$RN04" --backbone-size 64 --methods cuda $K5D7R --out $R-p224-s64-cuda-k5-d7-reflect.json ;;
    s64-k5d7r-k2) $B224 --backbone "tv:resnet18@$RN04" --backbone-size 64 --methods cuda $K5D7R --bank-seed 4321 --out $R-p224-s64-cuda-k5-d7-reflect-key2.json ;;
    s64-k5d7r-k3) $B224 --backbone "tv:resnet18@$RN04" --backbone-size 64 --methods cuda $K5D7R --bank-seed 99 --out $R-p224-s64-cuda-k5-d7-reflect-key3.json ;;
    d7r)       $B224 --backbone "tv:resnet18@$RN04" --methods cuda --param cuda.dilation=7 --param cuda.padding=reflect --out $R-p224-cuda-d7-reflect.json ;;
    rnd-k5d7r) $B224 --backbone tv:resnet18@random --allow-random-backbone --methods cuda $K5D7R --out $R-p224-random-cuda-k5-d7-reflect.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
