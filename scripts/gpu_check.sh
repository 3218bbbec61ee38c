#!/usr/bin/env bash
# The GPU checks of the model issue, as one script for a lent GPU machine (see README).
# Expects wheels for packages the GPU image lacks in .whl/ (deepspeed, pydantic, ...).
set -o pipefail
source scripts/gpu_env.sh
python3 -c "import torch, deepspeed, pydantic; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'pydantic', pydantic.__version__)" 2>&1 | grep -v WARN
python3 -m pytest -q -p no:cacheprovider -rs tests/model/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
for dtype in bf16 fp32; do
    python3 scripts/bench_model.py --device cuda --dtype "$dtype" --resolution 128 --batch 32 --steps 10 --warmup 3 2>&1 \
        | grep -v WARN | tee -a "$out/bench128.log"
done
