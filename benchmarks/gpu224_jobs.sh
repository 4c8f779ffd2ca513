# Sourced by run_gpu224.sh and run_gpu224_cudatap.sh (not run on its own): the 224-px victim task both
# drivers share, and how a job is started, so the two cannot drift apart.
#   left           seconds until DEADLINE (counted from T0), the limit every job is stopped at
#   job NAME ARGS  one bench_protection.py run in the background on the victim's task (classes 5-9 of
#                  TRAIN_SIZE / TEST_SIZE rows, RES px (224 unless set) JPEG 95, no defence), its log beside its
#                  result $R-NAME.json
PY=${PY:-python3}
DEV=${DEV:-cuda}
DATA=${DATA:-../shared/data/cifar10}
R=${R:-benchmarks/results/gpu224}          # result prefix
BB=${BB:-/tmp/gpu224/rn224-resnet18.safetensors}
TRAIN_SIZE=${TRAIN_SIZE:-10000}; TEST_SIZE=${TEST_SIZE:-10000}
FT_EPOCHS=${FT_EPOCHS:-8}; PROBE_EPOCHS=${PROBE_EPOCHS:-8}; SC_EPOCHS=${SC_EPOCHS:-15}
THREADS=${THREADS:-2}
RES=${RES:-224}                            # the side the victim's images are upscaled to
T0=$(date +%s)
K7D7R="--param cuda.kernel_size=7 --param cuda.dilation=7 --param cuda.padding=reflect"

left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
job() {
  local name=$1; shift
  timeout "$(left)" $PY benchmarks/bench_protection.py --threads "$THREADS" --device "$DEV" --data "$DATA" \
    --classes 5-9 --train-size "$TRAIN_SIZE" --test-size "$TEST_SIZE" --defences none --resolution "$RES" \
    "$@" --out "$R-$name.json" > "$R-$name.log" 2>&1 &
}
