#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (see README): the GPU tests, then the speed issue's
# benchmarks (forward+backward and full DeepSpeed training steps, Tiny and S, eager and compiled).
# Expects wheels for packages the GPU image lacks in .whl/ (deepspeed, pydantic, ...).
set -o pipefail
source scripts/gpu_env.sh
python3 -c "import torch, deepspeed, pydantic; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'pydantic', pydantic.__version__)" 2>&1 | grep -v WARN
python3 -m pytest -q -p no:cacheprovider -rs tests/model/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
for extra in "" "--compile"; do
    python3 scripts/bench_model.py --device cuda --dtype bf16 --resolution 128 --batch 32 --steps 10 --warmup 3 \
        --sizes tiny s $extra 2>&1 | grep -v WARN | tee -a "$out/bench_model.log"
done
python3 scripts/bench_train.py --device cuda --gpus 1 --resolution 128 --batch 32 --steps 40 --sizes tiny s 2>&1 \
    | grep -v WARN | tee "$out/bench_train.log"
python3 scripts/bench_loader.py --step-rate 1600 2>&1 | tee "$out/bench_loader.log"
