#!/usr/bin/env bash
# Class-wise tap against the three attackers (RESULTS.md, "Pretrained attackers, session 6"); run after run_pretrained_matrix.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD"  # this checkout, not an installed copy
ATTACK=/tmp/pt/attack-cnn-w32-r40k50k.safetensors
FIT=/tmp/pt/fit-cnn-w24-r25k40k.safetensors
B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bench_protection.py --threads 1 --train-size 5000 --defences none"
while pgrep -f run_pretrained_matrix.sh > /dev/null; do sleep 5; done
nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/fit_bank.py tap --train-size 5000 --param tap.backbone=$FIT --param tap.steps=8 --param tap.mode=class --out /tmp/pt/tapc.bank.arrow
TAP="--bank tap=/tmp/pt/tapc.bank.arrow"
$B --methods tap $TAP --attacker linear-probe --backbone $ATTACK --epochs 8 --out benchmarks/results/pretrained-probe-tapclass.json
$B --methods tap $TAP --attacker finetune --backbone $ATTACK --epochs 4 --out benchmarks/results/pretrained-finetune-tapclass.json
$B --methods tap $TAP --attacker scratch --epochs 8 --out benchmarks/results/pretrained-scratch-tapclass.json
