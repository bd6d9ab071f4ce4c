#!/usr/bin/env bash
# One prepared GPU run (issues #16, #18, #20): trains the band-limited MNIST and Fashion-MNIST
# weights (benchmarks/train_resolution.py, both datasets at once), measures them and the shipped
# weights with benchmarks/bench_resolution.py at n = 1000, runs SMC SBC at 512 and 2048
# particles and the SMC/DPS task table on 20 images, then benchmarks/device_check.py; about
# 9 minutes on one H200. Outputs land in $OUT (three .tgz files). Needs the IDX files under
# $DATA (default .dev/data, carried) and, where blackjax is missing, its wheel under .dev/whl.
# Prepared and dry-run on CPU (tiny settings) on 2026-12-04; the GPU loan was refused that day.
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false MPLBACKEND=Agg
D=${DATA:-.dev/data}; R=$OUT/r; mkdir -p $R /tmp/tr
TRAIN_S=${TRAIN_S:-270}; BENCH_S=${BENCH_S:-150}; CHECK_S=${CHECK_S:-110}
EXTRA=${EXTRA:-}
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt 2>&1
$PY -c "import jax, numpyro, equinox, diffrax; print(jax.__version__, numpyro.__version__, equinox.__version__, diffrax.__version__, jax.devices())" >> $R/gpu.txt 2>&1
T0=$(date +%s)
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl >> $R/gpu.txt 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
( timeout ${SBC_S:-230} $PY benchmarks/bench_smc_sbc.py --replications ${SBC_REPS:-100} --particles ${SBC_P1:-512} --steps 100 --out $R/smc_sbc_p${SBC_P1:-512}.json > $R/smc_sbc_1.log 2>&1
  timeout ${SBC2_S:-200} $PY benchmarks/bench_smc_sbc.py --replications ${SBC_REPS:-100} --particles ${SBC_P2:-2048} --steps 100 --out $R/smc_sbc_p${SBC_P2:-2048}.json > $R/smc_sbc_2.log 2>&1 ) &
( timeout ${SMCB_S:-400} $PY benchmarks/bench_smc.py --tasks deblur inpaint --images ${SMC_IMAGES:-20} --samplers smc dps --particles ${SMC_P:-1024} --steps 100 --batch-size ${SMC_P:-1024} --out $R/smc_tasks_gpu.json > $R/smc_tasks.log 2>&1 ) &
for ds in mnist fashion-mnist; do
  timeout $((TRAIN_S+30)) $PY benchmarks/train_resolution.py --data-root $D --out /tmp/tr \
     --datasets $ds --max-seconds $TRAIN_S --batch-size ${BS:-512} $EXTRA > $R/train_$ds.log 2>&1 &
  TRAIN_PIDS="$TRAIN_PIDS $!"
done
wait $TRAIN_PIDS
echo "training done after $(( $(date +%s) - T0 )) s" | tee -a $R/gpu.txt
ls -R /tmp/tr | head -40 >> $R/gpu.txt
NUM=${NUM:-1000}
BPIDS="$BPIDS $!"; timeout $BENCH_S $PY benchmarks/bench_resolution.py --checkpoint /tmp/tr/mnist --num $NUM ${BENCH_ARGS:-} --data-root $D --out $R/resolution_mnist_new > $R/bench_mnist_new.log 2>&1 &
BPIDS="$BPIDS $!"; timeout $BENCH_S $PY benchmarks/bench_resolution.py --checkpoint /tmp/tr/fashion-mnist --num $NUM ${BENCH_ARGS:-} --data-root $D --out $R/resolution_fashion_new > $R/bench_fashion_new.log 2>&1 &
BPIDS="$BPIDS $!"; timeout $BENCH_S $PY benchmarks/bench_resolution.py --checkpoint mnist --num $NUM ${BENCH_ARGS:-} --data-root $D --out $R/resolution_mnist_old > $R/bench_mnist_old.log 2>&1 &
BPIDS="$BPIDS $!"; timeout $BENCH_S $PY benchmarks/bench_resolution.py --checkpoint fashion-mnist --num $NUM ${BENCH_ARGS:-} --data-root $D --out $R/resolution_fashion_old > $R/bench_fashion_old.log 2>&1 &
BPIDS="$BPIDS $!"
wait $BPIDS
echo "benchmarks done after $(( $(date +%s) - T0 )) s" | tee -a $R/gpu.txt
timeout $CHECK_S $PY benchmarks/device_check.py --out $R/device_check ${CHECK_ARGS:-} > $R/device_check.log 2>&1
wait
echo "all done after $(( $(date +%s) - T0 )) s" | tee -a $R/gpu.txt
cd /tmp/tr && tar czf $OUT/weights_mnist.tgz mnist && tar czf $OUT/weights_fashion.tgz fashion-mnist
cd $OUT && tar czf results.tgz r && rm -rf r
ls -la $OUT
