#!/usr/bin/env bash
# The GPU check of the deep methods, as one bounded script for a borrowed GPU machine.
#
#   bash scripts/gpu_check.sh OUTDIR [SECONDS]
#
# 1. the environment (GPU, torch, CUDA);
# 2. the GPU tests (tests/methods/test_gpu.py: every common check of every deep method with
#    device='cuda', and CPU-vs-GPU MAP on the check data); the rest of the suite is CPU-only and runs in
#    CI. Threads per test worker are capped: 8 workers x 16 torch threads oversubscribed a 16-core
#    machine (load 137) and the workers outlived the pytest timeout, slowing everything after them;
# 3. scripts/bench_rdcmh.py and scripts/bench_deep.py on the GPU (Wiki and MIRFlickr training size);
# 4. the deep part of the `reference` suite (and the Wiki lambda sweep of the `paper` suite) with
#    --device $DEVICE, seed 0 first, then seeds 1-2, until SECONDS (default 540) have passed since the
#    start; records are atomic, so a cut leaves only whole records and a rerun resumes.
# Everything lands in OUTDIR as at most five files: logs.tgz (logs and bench JSON), records.tgz (run
# records and protocols) and codes.tar.part-* (the saved codes, in 15 MB pieces).
set -u
FINAL=${1:?usage: gpu_check.sh OUTDIR [SECONDS]}
BUDGET=${2:-540}
OUT=${TMPDIR:-/tmp}/gpu_check_logs
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
left() { echo $((BUDGET - SECONDS)); }
RES=${RESULTS_DIR:-gpu_results}
DEEP=dcmh,chn,cdq,rdcmh,rdcmh-nw,rdcmh-nd,rdcmh-ns,rdcmh-nj
JOBS=${JOBS:-12}
DEVICE=${DEVICE:-cuda}                      # DEVICE=cpu rehearses the script on a machine without a GPU
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")

{ nvidia-smi -L; nproc
  $PY -c "import torch, numpy, numba; print('cuda', torch.cuda.is_available()); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'numpy', numpy.__version__, 'numba', numba.__version__)"
} > "$OUT/env.txt" 2>&1

[ -n "${SKIP_TESTS:-}" ] || OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 NUMBA_NUM_THREADS=2 timeout -k 5 120 \
    $PY -m pytest -q -p no:cacheprovider $XDIST -rfEx tests/methods/test_gpu.py tests/methods/test_nets.py \
    > "$OUT/pytest.txt" 2>&1
echo "pytest rc $? at ${SECONDS}s" >> "$OUT/steps.txt"

[ -n "${SKIP_BENCH:-}" ] || timeout 45 $PY scripts/bench_rdcmh.py --device $DEVICE --json "$OUT/bench_rdcmh_cuda.json" > "$OUT/bench_rdcmh.txt" 2>&1
echo "bench_rdcmh rc $? at ${SECONDS}s" >> "$OUT/steps.txt"
[ -n "${SKIP_BENCH:-}" ] || timeout 60 $PY scripts/bench_deep.py --device $DEVICE --methods dcmh chn cdq --epochs 5 \
    --json "$OUT/bench_deep_cuda.json" > "$OUT/bench_deep.txt" 2>&1
echo "bench_deep rc $? at ${SECONDS}s" >> "$OUT/steps.txt"

run_suite() {  # run_suite TIMEOUT ARGS...
  local t=$1; shift
  [ "$t" -gt 10 ] || return 0
  timeout "$t" $PY -m benchmark run --device $DEVICE --jobs "$JOBS" --results-dir "$RES" --no-report --quiet \
      --no-progress "$@" >> "$OUT/suite.log" 2>&1
  echo "suite $* rc $? at ${SECONDS}s" >> "$OUT/steps.txt"
}
run_suite "$(left)" --suite reference --methods "$DEEP" --seeds 0
run_suite "$(left)" --suite paper --datasets wiki --methods rdcmh --bits 16 --mask-rates 0
run_suite "$(left)" --suite reference --methods "$DEEP" --seeds 1,2
tar czf "$FINAL/records.tgz" "$RES/records" "$RES/protocols" 2>> "$OUT/steps.txt"
tar cf - "$RES/codes" 2>> "$OUT/steps.txt" | split -b 15m - "$FINAL/codes.tar.part-"
echo "done at ${SECONDS}s" >> "$OUT/steps.txt"
tar czf "$FINAL/logs.tgz" -C "$OUT" .
cat "$OUT/env.txt" "$OUT/steps.txt"; tail -n 30 "$OUT/pytest.txt"; tail -n 5 "$OUT/suite.log"
