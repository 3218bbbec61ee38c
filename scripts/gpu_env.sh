# Sourced by the GPU check scripts: on a lent GPU machine (its own python3 with torch, nothing
# fetchable), install the wheels carried in .whl/ and put this checkout on PYTHONPATH.
out="${OUT:-/tmp/gpu_check}"; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
