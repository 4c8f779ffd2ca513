#!/usr/bin/env bash
# Pretrained attackers, session 6 (issue 22): the method x attacker matrix on the CPU harness.
# Backbones (built first, written to /tmp, never committed):
#   ATTACK: small-cnn w32 trained with labels on CIFAR-10 train rows [40000, 50000), 8 epochs (the attacker's)
#     python benchmarks/build_surrogate.py --train-rows 40000:50000 --width 32 --epochs 8 --seed 7 --out $ATTACK
#   FIT:    small-cnn w24 trained on rows [25000, 40000), 6 epochs, seed 3 (what tap is crafted through)
#     python benchmarks/build_surrogate.py --train-rows 25000:40000 --width 24 --epochs 6 --seed 3 --out $FIT
# Protected rows [0, N), clean test rows [0, 2000); N=5000 on this loaded 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, not an installed copy
ATTACK=${ATTACK:-/tmp/pt/attack-cnn-w32-r40k50k.safetensors}
FIT=${FIT:-/tmp/pt/fit-cnn-w24-r25k40k.safetensors}
N=${N:-5000}
OUT=${OUT:-benchmarks/results}
B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bench_protection.py --threads 1 --train-size $N --defences none"
STEPS=${STEPS:-8}
# the model-free methods first (cheap: forward passes only), then tap, then the trainers
$B --methods clean cuda ar lsp ops random --attacker linear-probe --backbone $ATTACK --epochs 8 \
    --out $OUT/pretrained-probe.json
while [ ! -f "$FIT" ]; do sleep 10; done
[ -f /tmp/pt/tap.bank.arrow ] || nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/fit_bank.py tap --train-size $N \
    --param tap.backbone=$FIT --param tap.steps=$STEPS --out /tmp/pt/tap.bank.arrow
TAP="--bank tap=/tmp/pt/tap.bank.arrow"
$B --methods tap $TAP --attacker linear-probe --backbone $ATTACK --epochs 8 --out $OUT/pretrained-probe-tap.json
$B --methods clean tap $TAP --attacker finetune --backbone $ATTACK --epochs 4 --out $OUT/pretrained-finetune-tap.json
$B --methods clean tap $TAP --attacker scratch --epochs 8 --out $OUT/pretrained-scratch-tap.json
$B --methods cuda lsp random --attacker finetune --backbone $ATTACK --epochs 4 --out $OUT/pretrained-finetune-others.json
