#!/usr/bin/env bash
# Surviving the pretrained attacker, session 7 (issue 22): the "other data" attacker (issue item 1) and a second
# training seed for the fine-tune rows. DIGITS = small-cnn w32 pretrained on the bundled 8x8 digits, coloured and
# upscaled to 32 px (benchmarks/build_backbone.py, its defaults): no CIFAR-10 image or class.
# Banks: /tmp/pt/cudatap-s20crop.bank.arrow from run_strong_cudatap.sh (NAME=cudatap-s20crop).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ATTACK=${ATTACK:-/tmp/pt/attack-cnn-w32-r40k50k.safetensors}
DIGITS=${DIGITS:-/tmp/pt/digits-cnn-w32.safetensors}
BANK=${BANK:-/tmp/pt/cudatap-s20crop.bank.arrow}
N=${N:-5000}
OUT=${OUT:-benchmarks/results}
B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bench_protection.py --threads 1 --train-size $N --defences none"
[ -f "$DIGITS" ] || nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/build_backbone.py --out $DIGITS
$B --methods clean cuda cudatap --bank cudatap=$BANK --attacker linear-probe --backbone $DIGITS --epochs 8 \
    --out $OUT/strong-linear-probe-digits.json
$B --methods cuda --param cuda.kernel_size=5 --attacker linear-probe --backbone $DIGITS --epochs 8 \
    --out $OUT/strong-linear-probe-digits-cuda-k5.json
# training seed 1 (every other row above is seed 0): is the fine-tune margin more than one run's luck?
$B --seed 1 --methods clean cudatap --bank cudatap=$BANK --attacker finetune --backbone $ATTACK --epochs 4 \
    --out $OUT/strong-finetune-seed1.json
$B --seed 1 --methods cuda --param cuda.kernel_size=5 --attacker finetune --backbone $ATTACK --epochs 4 \
    --out $OUT/strong-finetune-seed1-cuda-k5.json
