set -u
out=$1; limit=$2
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH="$PWD:$PYTHONPATH"
PATH="$(dirname "$(command -v python3)"):$PATH"
export OUTPUT_LIMITS_PARITY_DIR=.parity/cuda
timeout -s INT -k 10 90 python3 -m pytest tests/test_parity.py tests/test_fused.py tests/test_compile.py --device cuda -q -ra -p no:cacheprovider -n 14 -k "not test_compile or other_parameters" >"$out/tests2.log" 2>&1
echo "pytest exit $?" >>"$out/tests2.log"
tar -czf "$out/parity2.tar.gz" -C .parity/cuda . 2>>"$out/tests2.log"
timeout 40 python3 .whl/probe.py >"$out/probe.log" 2>&1
left=$((limit - SECONDS))
timeout -s INT -k 10 $((left - 15)) python3 -m nox --no-venv -s bench -- --devices cuda --threads all --sizes 24,20,16 --budget 0.1 --stop-after $((left - 45)) --techniques scaled_sigmoid,scaled_tanh,smooth_clamp -k torch-compile >"$out/bench2.log" 2>&1
echo "nox exit $?" >>"$out/bench2.log"
stamp=$(ls -t .bench | grep -v latest | head -1)
tar -czf "$out/bench2.tar.gz" -C .bench "$stamp"
