#!/usr/bin/env bash
# The GPU run (issue 12) on a machine whose frameworks are installed and that has no package
# index, cut to a time limit: the parity tests on CUDA, then `nox --no-venv -s bench` on CUDA
# alone, sizes in the order given (the ones that matter first; rows not started when the time is
# up are skipped, and the JSON keeps what ran).
#
#   bench/gpu_run.sh OUT [SECONDS] [SIZES]    e.g. bench/gpu_run.sh /tmp/gpu 560 24,20,16,26
#
# OUT receives env.txt, tests.log, parity.tar.gz, probe.log, probe.json, bench.log and bench.tar.gz
# (.bench/<stamp>/).
# nox must be importable (pip install nox, or its wheels on PYTHONPATH).
set -u
out=${1:?usage: bench/gpu_run.sh OUT [SECONDS] [SIZES]}
limit=${2:-560}
sizes=${3:-24,20,16,26}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script out on a machine without a GPU
if [ "$limit" -lt 300 ]; then
    echo "bench/gpu_run.sh: SECONDS must be at least 300 (the tests, the probe, nox's start and the report), got $limit" >&2
    exit 2
fi
mkdir -p "$out"
# nox --no-venv runs `pytest` and `python` from PATH: the interpreter's own.
PATH="$(dirname "$(command -v "$python")"):$PATH"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    for name in torch jax jaxlib flax numpy triton; do
        "$python" -c "import $name; print('$name', $name.__version__)"
    done
    "$python" -c 'import torch, jax; print("torch cuda", torch.version.cuda, torch.cuda.is_available(), jax.devices())'
    # One call of each framework on the device, before the minutes go into the runs below.
    "$python" -c "import harness, numpy as np
for fw in harness.FRAMEWORKS:
    b = harness.backend(fw); b.use_device('$device')
    x = np.arange(8.0).reshape(2, 4)
    print(fw, b.device(), b.vjp(b.place(harness.build('softmax', fw)), x, x, 'float32')[1].tolist())"
    echo "cores $(nproc)"
    # The C++ autograd node (impl_torch/_native/node.py) built once here, not by each test worker.
    "$python" -c "from impl_torch._native import node; print('autograd node:', node.node().note)"
} >"$out/env.txt" 2>&1

# Parity on CUDA: values and VJPs of both frameworks on the GPU, and the Triton kernels' own tests
# (the elementwise ones; the row kernels against the formula they replace).
# A quarter of the time at most; the measured errors land in parity*.json (one per worker) whatever
# the outcome.
export OUTPUT_LIMITS_PARITY_DIR=.parity/$device
rm -rf "$OUTPUT_LIMITS_PARITY_DIR"  # this run's records only
workers=()
n=$(($(nproc) - 2))
if "$python" -c "import xdist" 2>/dev/null; then workers=(-n "$((n > 12 ? 12 : (n < 1 ? 1 : n)))"); fi
# SIGINT, not TERM: pytest then ends its session, and the records are written.
timeout -s INT -k 20 $((limit / 4)) "$python" -m pytest tests/test_parity.py tests/test_fused.py tests/test_rows.py --device "$device" -q -ra \
    -p no:cacheprovider "${workers[@]}" >"$out/tests.log" 2>&1
echo "pytest exit $?" >>"$out/tests.log"
tar -czf "$out/parity.tar.gz" -C "$OUTPUT_LIMITS_PARITY_DIR" . 2>>"$out/tests.log"

# The eager Triton path part by part (host time, kernel time, the division's slow path) and the
# JAX norms against their formula alone, in a fifth of the time at most, 100 s (probe.json keeps
# what ran): bench/gpu_probe.py.
probe=$((limit / 5 < 100 ? limit / 5 : 100))
timeout -s INT -k 10 "$probe" "$python" -m bench.gpu_probe --device "$device" --sizes 10,24 --seconds 0.1 \
    --out "$out/probe.json" >"$out/probe.log" 2>&1
echo "probe exit $?" >>"$out/probe.log"

# The benchmark, in what is left of the time: rows stop starting 80 s before the end, which
# leaves the row under way, the report and the copy their time (--stop-after counts from
# pytest's start, after nox's and the imports, some 15 s of those 80).
before=$(ls .bench 2>/dev/null)
left=$((limit - SECONDS))
if [ "$left" -lt 120 ]; then
    echo "bench/gpu_run.sh: $left s left after the tests and the probe, too few for the bench" >"$out/bench.log"
    exit 1
fi
timeout -s INT -k 20 $((left - 30)) "$python" -m nox --no-venv -s bench -- --devices "$device" --threads all --sizes "$sizes" \
    --budget 0.1 --stop-after $((left - 80)) >"$out/bench.log" 2>&1
echo "nox exit $?" >>"$out/bench.log"
stamp=$(ls -t .bench | grep -v latest | head -1)
if [ -z "$stamp" ] || grep -qx "$stamp" <<<"$before"; then
    echo "no new folder in .bench: the bench stopped before writing raw.json (bench.log)" >>"$out/bench.log"
    exit 1
fi
tar -czf "$out/bench.tar.gz" -C .bench "$stamp"
