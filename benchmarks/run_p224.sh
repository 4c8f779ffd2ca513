#!/usr/bin/env bash
# Linear probe at 224 px on backbones pretrained on other data (issue 22, session 8): CIFAR-10 train
# rows [0, 3000) protected, clean test rows [0, 1000), both upscaled to 224 px (bicubic, JPEG 95),
# bank seed 1234, 8 L-BFGS rounds. FRACTAL = torchvision ResNet-18 pretrained here on procedural
# fractals (benchmarks/build_backbone.py --arch resnet18 --data fractals); DIGITS = the 32-px digits
# small CNN, read at 224 px (--backbone-size 224: it pools globally). random = the same ResNet-18 with
# random weights (init seed 0), clean only: what the fractal pretraining added to the probe.
# STEPS="clean cuda reflect k5 k9 digits random others" picks the parts (default: those of session 8).
# Session 9 (benchmarks/results/p224s9-*): cuda with dilated taps (dilation=7 = 224/32, so the 3x3 filter
# acts at the scale of the upscaled content, as it does at 32 px), the random-init control with it, lsp,
# and DIGITS at 224; STEPS="d7r rnd-clean rnd-d7r lsp d7 d4r dig-clean dig-d7r dig-cuda dig-d7 dig-reflect dig-d7r-k2" (not in the default;
# dig-d7r-k2 is dig-d7r with a second bank key, 4321).
# Session 10 (benchmarks/results/p224s10-*): STEPS="dig-k5d7r-k2", cuda kernel_size=5 dilation=7 reflect on DIGITS at
# bank key 4321 (the lead's session-9 row of the same setting used key 1234); "rnd-k5d7r", the same filters (key 1234)
# under the random-init ResNet-18 probe; "dig-d14r dig-d14r-k2", 3x3 filters at dilation 14 = 224/16 (the spacing
# that met the 96-px from-scratch line, 96/16 = 6) on DIGITS at keys 1234 and 4321; "dig-k5d7r-k3", k5 d7 reflect on
# DIGITS at a third bank key, 777.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
FRACTAL=${FRACTAL:-tv:resnet18@/tmp/pt/fractal-resnet18-s64.safetensors}
DIGITS=${DIGITS:-/tmp/pt/digits-cnn-w32.safetensors}
R=benchmarks/results/p224s8
R9=benchmarks/results/p224s9
R10=benchmarks/results/p224s10
RANDOM_BB="tv:resnet18@random --allow-random-backbone"
D7R="--param cuda.dilation=7 --param cuda.padding=reflect"
D14R="--param cuda.dilation=14 --param cuda.padding=reflect"
B="nice -n 5 env OMP_NUM_THREADS=1 $PY benchmarks/bench_protection.py --threads 1 --train-size 3000 --test-size 1000 --defences none --resolution 224 --attacker linear-probe --epochs 8"
for step in ${STEPS:-clean cuda reflect k5 k9 digits others}; do
  case $step in
    clean)   $B --backbone "$FRACTAL" --methods clean --out $R-probe-fractal-clean.json ;;
    cuda)    $B --backbone "$FRACTAL" --methods cuda --out $R-probe-fractal-cuda.json ;;
    reflect) $B --backbone "$FRACTAL" --methods cuda --param cuda.padding=reflect --out $R-probe-fractal-cuda-reflect.json ;;
    k5)      $B --backbone "$FRACTAL" --methods cuda --param cuda.kernel_size=5 --out $R-probe-fractal-cuda-k5.json ;;
    k9)      $B --backbone "$FRACTAL" --methods cuda --param cuda.kernel_size=9 --param cuda.blur_parameter=0.06 --out $R-probe-fractal-cuda-k9.json ;;
    digits)  $B --backbone "$DIGITS" --backbone-size 224 --methods clean cuda --out $R-probe-digits224.json ;;
    random)  $B --backbone tv:resnet18@random --allow-random-backbone --methods clean --out $R-probe-random-clean.json ;;
    others)  $B --backbone "$FRACTAL" --methods ops ar lsp --out $R-probe-fractal-others.json ;;
    d7r)       $B --backbone "$FRACTAL" --methods cuda $D7R --out $R9-probe-fractal-cuda-d7-reflect.json ;;
    d7)        $B --backbone "$FRACTAL" --methods cuda --param cuda.dilation=7 --out $R9-probe-fractal-cuda-d7.json ;;
    d4r)       $B --backbone "$FRACTAL" --methods cuda --param cuda.dilation=4 --param cuda.padding=reflect --out $R9-probe-fractal-cuda-d4-reflect.json ;;
    lsp)       $B --backbone "$FRACTAL" --methods lsp --out $R9-probe-fractal-lsp.json ;;
    rnd-clean) $B --backbone $RANDOM_BB --methods clean --out $R9-probe-random-clean.json ;;
    rnd-d7r)   $B --backbone $RANDOM_BB --methods cuda $D7R --out $R9-probe-random-cuda-d7-reflect.json ;;
    dig-clean) $B --backbone "$DIGITS" --backbone-size 224 --methods clean --out $R9-probe-digits224-clean.json ;;
    dig-d7r)   $B --backbone "$DIGITS" --backbone-size 224 --methods cuda $D7R --out $R9-probe-digits224-cuda-d7-reflect.json ;;
    dig-cuda)  $B --backbone "$DIGITS" --backbone-size 224 --methods cuda --out $R9-probe-digits224-cuda.json ;;
    dig-d7r-k2) $B --backbone "$DIGITS" --backbone-size 224 --methods cuda $D7R --bank-seed 4321 --out $R9-probe-digits224-cuda-d7-reflect-key2.json ;;
    dig-k5d7r-k2) $B --backbone "$DIGITS" --backbone-size 224 --methods cuda --param cuda.kernel_size=5 $D7R --bank-seed 4321 --out $R10-probe-digits224-cuda-k5-d7-reflect-key2.json ;;
    dig-k5d7r-k3) $B --backbone "$DIGITS" --backbone-size 224 --methods cuda --param cuda.kernel_size=5 $D7R --bank-seed 777 --out $R10-probe-digits224-cuda-k5-d7-reflect-key3.json ;;
    rnd-k5d7r) $B --backbone $RANDOM_BB --methods cuda --param cuda.kernel_size=5 $D7R --out $R10-probe-random-cuda-k5-d7-reflect.json ;;
    dig-d14r)  $B --backbone "$DIGITS" --backbone-size 224 --methods cuda $D14R --out $R10-probe-digits224-cuda-d14-reflect.json ;;
    dig-d14r-k2) $B --backbone "$DIGITS" --backbone-size 224 --methods cuda $D14R --bank-seed 4321 --out $R10-probe-digits224-cuda-d14-reflect-key2.json ;;
    dig-reflect) $B --backbone "$DIGITS" --backbone-size 224 --methods cuda --param cuda.padding=reflect --out $R9-probe-digits224-cuda-reflect.json ;;
    dig-d7)    $B --backbone "$DIGITS" --backbone-size 224 --methods cuda --param cuda.dilation=7 --out $R9-probe-digits224-cuda-d7.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
