#!/usr/bin/env bash
# Choosing cuda's key at fit time (issue 22, session 11): the held-out check of key_trials.
# For a bank seed KEY (a kept or a worst-ranked candidate printed by `cuda_keys.py --candidates`), the rows of
# RESULTS.md "One cuda setting at three sizes (session 10)" with `kernel_size=5, padding=reflect`:
#   32 px: fine-tune / linear probe of ATTACK and cnn-small from scratch (train rows [0, 5000), training seed 0)
#   96 px: cnn-small from scratch, dilation 6 (rows [0, 5000) upscaled, JPEG 95)
# NAME tags the output files: benchmarks/results/keysel11-<NAME>-{finetune,linear-probe,scratch,res96}.json.
# EXTRA (e.g. "--param cuda.key_trials=8") is passed to every row; STEPS picks rows (default: all four).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python}
A=${ATTACK:-/tmp/pt/attack-cnn-w32-r40k50k.safetensors}
: "${KEY:?set KEY=<bank seed>}" "${NAME:?set NAME=<tag>}"
R=benchmarks/results/keysel11-$NAME
K5="--methods cuda --param cuda.kernel_size=5 --param cuda.padding=reflect ${EXTRA:-}"
S="nice -n 5 env OMP_NUM_THREADS=1 $PY benchmarks/bench_protection.py --threads 1 --defences none --bank-seed $KEY"
for step in ${STEPS:-finetune linear-probe scratch res96}; do
    case $step in
    finetune)     $S --train-size 5000 $K5 --attacker finetune --backbone $A --epochs 4 --out $R-finetune.json ;;
    linear-probe) $S --train-size 5000 $K5 --attacker linear-probe --backbone $A --epochs 8 --out $R-linear-probe.json ;;
    scratch)      $S --train-size 5000 $K5 --attacker scratch --epochs 8 --out $R-scratch.json ;;
    res96)        $S --resolution 96 --jpeg-quality 95 --train-size 5000 --test-size 2000 --epochs 8 --seed 0 \
                     $K5 --param cuda.dilation=6 --out $R-res96.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
