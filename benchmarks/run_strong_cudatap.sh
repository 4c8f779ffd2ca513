#!/usr/bin/env bash
# Surviving the pretrained attacker, session 7 (issue 22): cudatap (cuda's filters, then tap's noise crafted
# on the filtered images through FIT) against ATTACK's fine-tune, linear probe and from scratch.
# FIT = small-cnn w24 on CIFAR-10 rows [25000, 40000); ATTACK = small-cnn w32 on rows [40000, 50000) (both built by
# the commands in run_pretrained_matrix.sh). Protected rows [0, N), test rows [0, 2000), 32 px, bank seed 1234,
# training seed 0, no defence. NAME names the bank; FITP holds extra fit_bank --param flags. The ensemble row also
# crafts through FIT2 = small-cnn w16 on rows [25000, 40000): python benchmarks/build_surrogate.py --train-rows
# 25000:40000 --width 16 --epochs 6 --seed 5 --out /tmp/pt/fit2-cnn-w16-r25k40k.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ATTACK=${ATTACK:-/tmp/pt/attack-cnn-w32-r40k50k.safetensors}
FIT=${FIT:-/tmp/pt/fit-cnn-w24-r25k40k.safetensors}
N=${N:-5000}
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-cudatap}
FITP=${FITP:-}
BANK=${BANK:-/tmp/pt/$NAME.bank.arrow}
ATTACKERS=${ATTACKERS:-finetune linear-probe scratch}
[ -f "$BANK" ] || nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/fit_bank.py cudatap --train-size $N \
    --param cudatap.backbone=$FIT --param cudatap.steps=8 $FITP --out $BANK
B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bench_protection.py --threads 1 --train-size $N --defences none"
for a in $ATTACKERS; do
    case $a in
        finetune) $B --methods cudatap --bank cudatap=$BANK --attacker finetune --backbone $ATTACK --epochs 4 \
                      --out $OUT/strong-finetune-$NAME.json ;;
        linear-probe) $B --methods cudatap --bank cudatap=$BANK --attacker linear-probe --backbone $ATTACK --epochs 8 \
                      --out $OUT/strong-linear-probe-$NAME.json ;;
        scratch) $B --methods cudatap --bank cudatap=$BANK --attacker scratch --epochs 8 --out $OUT/strong-scratch-$NAME.json ;;
    esac
done
