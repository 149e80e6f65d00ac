#!/usr/bin/env bash
# The GPU check of `--device cuda` / `--tf32`: run from a fresh copy of the repo on a machine with a
# CUDA GPU and no network (CI never runs it; nothing in the test suite needs a GPU).
#
#     bash scripts/gpu_check.sh          # logs under $OUT when set, else ./gpu_check_out
#
# 1. diagnostics: nvidia-smi, every python found and its torch (version, CUDA, GPU seen);
# 2. picks the first python whose torch sees a GPU (a CPU-only .venv is skipped; pure-Python test
#    packages it lacks, pytest and its helpers, are borrowed from .venv when that has them);
# 3. PYTHONPATH=reference python -m pytest tests/test_device.py (the GPU tests run there, the rest too);
# 4. `handgrad compare` on cuda: every scenario in float64 (50 steps), the float32 ones without and
#    with TF32 (30 steps), in one process, each line with its exit code and time.
# Exit 0 when the tests and the float64 runs pass; the float32/TF32 command-line runs are shown for
# reading (a float32 run may end at a ReLU-kink or max-pool branch flip, which the tests judge).
# Every step has a time limit: about 3 minutes in all. The bad-input cases of test_device.py write a
# workbook, so openpyxl must import: on a machine without it, put openpyxl and et_xmlfile wheels on
# PYTHONPATH first (pip install --no-index --target /tmp/site *.whl; export PYTHONPATH=/tmp/site).
set -u
cd "$(dirname "$0")/.." || exit 2
LOGS="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$LOGS"
exec > >(tee "$LOGS/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
started=$SECONDS
failed=0

echo "== diagnostics ($(date -u +%FT%TZ), $(uname -m))"
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || echo "nvidia-smi: missing or failed"
candidates=(python3 python3.13 python3.12 python3.11 python3.10 /opt/conda/bin/python /opt/torch/.venv/bin/python3 .venv/bin/python)
declare -A seen
PY=""
for candidate in "${candidates[@]}"; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    real=$(readlink -f "$path")
    [ -n "${seen[$real]:-}" ] && continue
    seen[$real]=1
    report=$(timeout 60 "$path" -c 'import sys, torch
print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())' 2>&1 | tail -1)
    echo "-- $path ($real): $report"
    if [ -z "$PY" ] && [[ "$report" == *"GPU True" ]]; then PY=$path; fi
done
for candidate in python3 .venv/bin/python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    echo "-- $candidate -m pip list (torch, numpy, pytest, openpyxl):"
    timeout 30 "$candidate" -m pip list 2>/dev/null | grep -i -E '^(torch|numpy|pytest|openpyxl|hypothesis) ' | sed 's/^/     /'
done
if [ -z "$PY" ]; then
    echo "NO python with a CUDA torch that sees a GPU was found: nothing to check (see the lines above)."
    exit 3
fi
echo "== using $PY"

# pytest and its pure-Python helpers from .venv, only where $PY lacks them (never torch or numpy)
export PYTHONPATH="$PWD/reference${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import pytest' 2>/dev/null; then
    shim=$(mktemp -d)
    for site in .venv/lib/python3*/site-packages; do
        for name in pytest _pytest pluggy iniconfig packaging py.py exceptiongroup tomli; do
            [ -e "$site/$name" ] && [ ! -e "$shim/$name" ] && ln -s "$PWD/$site/$name" "$shim/$name"
        done
    done
    export PYTHONPATH="$PYTHONPATH:$shim"
    "$PY" -c 'import pytest; print("pytest", pytest.__version__, "borrowed from .venv")' || echo "no pytest"
fi
"$PY" -c 'import numpy, torch
x = torch.randn(256, 256, device="cuda")
print("numpy", numpy.__version__, "|", torch.cuda.get_device_name(), "| TF32 defaults: matmul",
      torch.backends.cuda.matmul.allow_tf32, "cudnn", torch.backends.cudnn.allow_tf32, "| ok", bool((x @ x).isfinite().all()))' \
    || { echo "torch cannot run on the GPU"; exit 3; }

echo "== pytest tests/test_device.py ($((SECONDS - started)) s so far)"
timeout 100 "$PY" -m pytest -q -rA -s -p no:cacheprovider --junitxml="$LOGS/test_device.xml" tests/test_device.py
code=$?
echo "pytest exit $code"
[ "$code" -eq 0 ] || failed=1

echo "== handgrad compare on cuda ($((SECONDS - started)) s so far)"
timeout 90 "$PY" - "$LOGS" <<'EOF'
import sys
import time
import traceback

from handgrad.cli import main

logs = sys.argv[1]
float64 = [[name, "--steps", "50"] for name in ("xor", "mlp", "alexnet-mini", "parity", "echo", "deep", "multitask")]
float32 = [[name, "--steps", "30", "--dtype", "float32"] for name in ("xor", "mlp", "alexnet-mini", "deep", "multitask")]
tf32 = [
    ["alexnet-mini", "--steps", "30", "--dtype", "float32", "--tf32", "--json", f"{logs}/alexnet_tf32.json"],
    ["mlp", "--steps", "30", "--dtype", "float32", "--tf32", "--sizes", "4,64,64,64,2"],
]
failed = 0
for group, runs in (("float64", float64), ("float32", float32), ("tf32", tf32)):
    for options in runs:
        argv = ["compare", options[0], "--device", "cuda", "--quiet", *options[1:]]
        start = time.perf_counter()
        try:
            code = main(argv)
        except Exception:  # keep going: the other runs still tell something
            traceback.print_exc()
            code = "exception"
        print(f"   [{group}: exit {code}, {time.perf_counter() - start:.1f} s] handgrad {' '.join(argv)}")
        if group == "float64" and code != 0:
            failed = 1
sys.exit(failed)
EOF
code=$?
echo "handgrad compare (float64 runs) exit $code"
[ "$code" -eq 0 ] || failed=1

echo "== done in $((SECONDS - started)) s: $([ $failed -eq 0 ] && echo PASS || echo FAIL)"
exit $failed
