#!/usr/bin/env bash
# Surviving the pretrained attacker, session 7 (issue 22): cuda's strength against the fine-tune of ATTACK.
# Same setting as run_pretrained_matrix.sh (rows [0, N) protected, test rows [0, 2000), 32 px, bank seed 1234,
# training seed 0, no defence); ATTACK = small-cnn w32 trained on CIFAR-10 rows [40000, 50000) (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ATTACK=${ATTACK:-/tmp/pt/attack-cnn-w32-r40k50k.safetensors}
N=${N:-5000}
OUT=${OUT:-benchmarks/results}
ATTACKER=${ATTACKER:-finetune}
EPOCHS=${EPOCHS:-4}
B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bench_protection.py --threads 1 --train-size $N --defences none"
BB=""; [ "$ATTACKER" = scratch ] || BB="--backbone $ATTACK"
# name:params, one bench run each (bench_protection takes one value per method parameter)
for spec in ${SPECS:-pb05:cuda.blur_parameter=0.5 pb08:cuda.blur_parameter=0.8 k5:cuda.kernel_size=5}; do
    name=${spec%%:*}; params=${spec#*:}
    P=""; for kv in ${params//,/ }; do P="$P --param $kv"; done
    $B --methods cuda $P --attacker $ATTACKER $BB --epochs $EPOCHS --out $OUT/strong-$ATTACKER-cuda-$name.json
done
