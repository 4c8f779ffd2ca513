#!/usr/bin/env bash
# An "other data" backbone from a disjoint label set (issue 22, session 10): CLS04 = the small CNN w32
# (ATTACK's recipe) trained with labels on CIFAR-10 classes 0-4 only (airplane, automobile, bird, cat,
# deer), train rows [10000, 50000) (never protected); the protected task is classes 5-9 only (dog, frog,
# horse, ship, truck: classes CLS04 never saw), 5-way, relabelled 0-4, rows [0, N) of those classes.
# RAND04 = the same architecture (5-way head) with random weights (torch seed 0): the control for what
# CLS04's pretraining adds (the small-cnn loader has no '@random', so it is a file like CLS04).
# STEPS picks the parts: build rand p32-clean p32-cuda p32-k5r rnd32-clean p224-clean p224-k5d7r p224-d7r
# rnd224-clean p224-k5d7r-k2 (default: all, in that order), and the extra rows rnd32-cuda rnd32-k5r
# p32-k5r-k2 p32-k5r-k3 p32-cuda-k2 p32-cuda-k3 rnd224-k5d7r p224-k5d7r-k3 p224-clean-r16 p224-k5d7r-r16
# p224-k5d7r-k2-r16 p224-k5d7r-k3-r16 rnd224-clean-r16 (bank seeds: 1234, k2 = 4321,
# k3 = 99; r16: 16 L-BFGS rounds, the later --epochs wins; not in the default).
# Outputs: benchmarks/results/cls04-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
CLS04=${CLS04:-/tmp/bb10/cls04.safetensors}
RAND04=${RAND04:-/tmp/bb10/rand04.safetensors}
R=benchmarks/results/cls04
N="nice -n 5 env OMP_NUM_THREADS=1"
B32="$N $PY benchmarks/bench_protection.py --threads 1 --classes 5-9 --train-size 10000 --test-size 2000 --defences none --attacker linear-probe --epochs 8"
B224="$N $PY benchmarks/bench_protection.py --threads 1 --classes 5-9 --train-size 6000 --test-size 2000 --defences none --resolution 224 --attacker linear-probe --epochs 8 --backbone-size 224"
K5D7R="--param cuda.kernel_size=5 --param cuda.dilation=7 --param cuda.padding=reflect"
for step in ${STEPS:-build rand p32-clean p32-cuda p32-k5r rnd32-clean p224-clean p224-k5d7r p224-d7r rnd224-clean p224-k5d7r-k2}; do
  case $step in
    build) $N $PY benchmarks/build_surrogate.py --train-rows 10000:50000 --classes 0-4 --width 32 --epochs 8 --seed 7 --out "$CLS04" ;;
    rand)  $PY -c "
import sys, torch
from uetransforms.models.encoders import save_small_cnn
from uetransforms.models.networks import SmallCNN
torch.manual_seed(0)
net = SmallCNN(5, 3, width=32).eval()
print(save_small_cnn(net, sys.argv[1], extra={'trained_on': 'nothing: random init (torch seed 0), SmallCNN w32 with a 5-way head, '
      'the control for the classes 0-4 backbone', 'random_init': 'true'}))" "$RAND04" ;;
    p32-clean)  $B32 --backbone "$CLS04" --methods clean --out $R-p32-clean.json ;;
    p32-cuda)   $B32 --backbone "$CLS04" --methods cuda --out $R-p32-cuda.json ;;
    p32-k5r)    $B32 --backbone "$CLS04" --methods cuda --param cuda.kernel_size=5 --param cuda.padding=reflect --out $R-p32-cuda-k5-reflect.json ;;
    rnd32-clean) $B32 --backbone "$RAND04" --methods clean --out $R-p32-random-clean.json ;;
    p224-clean) $B224 --backbone "$CLS04" --methods clean --out $R-p224-clean.json ;;
    p224-k5d7r) $B224 --backbone "$CLS04" --methods cuda $K5D7R --out $R-p224-cuda-k5-d7-reflect.json ;;
    p224-d7r)   $B224 --backbone "$CLS04" --methods cuda --param cuda.dilation=7 --param cuda.padding=reflect --out $R-p224-cuda-d7-reflect.json ;;
    rnd224-clean) $B224 --backbone "$RAND04" --methods clean --out $R-p224-random-clean.json ;;
    p224-k5d7r-k2) $B224 --backbone "$CLS04" --methods cuda $K5D7R --bank-seed 4321 --out $R-p224-cuda-k5-d7-reflect-key2.json ;;
    rnd32-cuda) $B32 --backbone "$RAND04" --methods cuda --out $R-p32-random-cuda.json ;;
    rnd32-k5r)  $B32 --backbone "$RAND04" --methods cuda --param cuda.kernel_size=5 --param cuda.padding=reflect --out $R-p32-random-cuda-k5-reflect.json ;;
    p32-k5r-k2) $B32 --backbone "$CLS04" --methods cuda --param cuda.kernel_size=5 --param cuda.padding=reflect --bank-seed 4321 --out $R-p32-cuda-k5-reflect-key2.json ;;
    p32-k5r-k3) $B32 --backbone "$CLS04" --methods cuda --param cuda.kernel_size=5 --param cuda.padding=reflect --bank-seed 99 --out $R-p32-cuda-k5-reflect-key3.json ;;
    p32-cuda-k2) $B32 --backbone "$CLS04" --methods cuda --bank-seed 4321 --out $R-p32-cuda-key2.json ;;
    p32-cuda-k3) $B32 --backbone "$CLS04" --methods cuda --bank-seed 99 --out $R-p32-cuda-key3.json ;;
    p224-clean-r16) $B224 --backbone "$CLS04" --methods clean --epochs 16 --out $R-p224-clean-r16.json ;;
    p224-k5d7r-r16) $B224 --backbone "$CLS04" --methods cuda $K5D7R --epochs 16 --out $R-p224-cuda-k5-d7-reflect-r16.json ;;
    p224-k5d7r-k2-r16) $B224 --backbone "$CLS04" --methods cuda $K5D7R --bank-seed 4321 --epochs 16 --out $R-p224-cuda-k5-d7-reflect-key2-r16.json ;;
    p224-k5d7r-k3-r16) $B224 --backbone "$CLS04" --methods cuda $K5D7R --bank-seed 99 --epochs 16 --out $R-p224-cuda-k5-d7-reflect-key3-r16.json ;;
    rnd224-clean-r16) $B224 --backbone "$RAND04" --methods clean --epochs 16 --out $R-p224-random-clean-r16.json ;;
    rnd224-k5d7r) $B224 --backbone "$RAND04" --methods cuda $K5D7R --out $R-p224-random-cuda-k5-d7-reflect.json ;;
    p224-k5d7r-k3) $B224 --backbone "$CLS04" --methods cuda $K5D7R --bank-seed 99 --out $R-p224-cuda-k5-d7-reflect-key3.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
