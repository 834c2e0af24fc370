#!/usr/bin/env bash
# NVLM-D GPU bundle: runs every GPU test (GPU result vs the CPU reference) and the benchmarks on a machine with an
# NVIDIA driver and CUDA 13 libraries, no Rust needed. Usage: ./run.sh OUT_DIR [all|tests|bench]
# Prints versions first, then (tests) each test's verdict and error figures, then (bench) the benchmark tables; the
# full log is written to OUT_DIR/gpu-run.log (OUT_DIR/gpu-run-SECTION.log for one section). Every command runs under
# a time limit, so one that hangs costs its limit, not the run. Exit status: 0 when every test passed.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: run.sh OUT_DIR [all|tests|bench]}
SECTION=${2:-all}
case "$SECTION" in all|tests|bench) ;; *) echo "run.sh: unknown section '$SECTION' (all, tests or bench)" >&2; exit 2;; esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu-run.log"
[ "$SECTION" = all ] || LOG="$OUT/gpu-run-$SECTION.log"
# limit SECONDS COMMAND...: the command, killed after SECONDS (exit status 124 then, with a line saying so).
limit() {
  local seconds=$1; shift
  timeout --kill-after=10 "$seconds" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "TIMEOUT after ${seconds}s: $*"
  return $rc
}

# Library lookup: $NVLM_CUDA_LIB_DIR first when set (a particular CUDA install, or the CUDA emulator's
# target/cuda-emu to rehearse this script without a GPU), then the toolkit's lib64 and the nvidia/*/lib folders of the
# machine's Python packages.
dirs=()
[ -n "${NVLM_CUDA_LIB_DIR:-}" ] && dirs+=("$NVLM_CUDA_LIB_DIR")
for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && dirs+=("$d"); done
if command -v python3 >/dev/null; then
  while IFS= read -r d; do [ -n "$d" ] && dirs+=("$d"); done < <(python3 - <<'PY' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
PY
)
fi
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
# The pip NCCL wheel ships only libnccl.so.2; cudarc looks for libnccl.so first. The first folder with NCCL wins:
# when it has only libnccl.so.2, a libnccl.so link to it goes into a shim folder searched after the others.
for d in "${dirs[@]}"; do
  if [ -e "$d/libnccl.so" ]; then break; fi
  if [ -e "$d/libnccl.so.2" ]; then ln -sf "$d/libnccl.so.2" "$shim/libnccl.so"; break; fi
done
LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]}"):$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
export NVLM_REQUIRE_GPU=1
export NVLM_KERNEL_CACHE="$OUT/kernel-cache"
# Headers for NVRTC (cuda_bf16.h): the toolkit's, else a pip wheel's.
if [ -z "${NVLM_CUDA_INCLUDE:-}" ]; then
  for d in "${CUDA_HOME:-/usr/local/cuda}/include" "${dirs[@]/%\/lib/\/include}"; do
    if [ -e "$d/cuda_bf16.h" ]; then export NVLM_CUDA_INCLUDE="$d"; break; fi
  done
fi

main() {
  echo "== NVLM-D GPU bundle run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "torch: not importable"
  echo "== libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
  for lib in libcuda.so.1 libnvrtc.so.13 libcublasLt.so.13 libcublas.so.13 libnccl.so.2; do
    found=""
    for d in $(echo "$LD_LIBRARY_PATH" | tr ':' ' ') /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu; do
      if [ -e "$d/$lib" ]; then found=$(readlink -f "$d/$lib"); break; fi
    done
    echo "$lib: ${found:-not found}"
  done
  limit 60 "$HERE/bin/nvlm" devices 2>&1
  status=0
  if [ "$SECTION" != bench ]; then tests || status=1; fi
  if [ "$SECTION" != tests ]; then bench || status=1; fi
  return $status
}

tests() {
  local status=0
  echo "== tests"
  for t in "$HERE"/bin/tests/*; do
    name=$(basename "$t")
    echo "-- $name"
    if limit 300 "$t" --test-threads=1 --nocapture; then echo "VERDICT $name PASS"; else echo "VERDICT $name FAIL"; status=1; fi
  done

  # The opt-in Hopper attention kernels (NVLM_FLASH=wgmma / tma) in a process of their own: a kernel that faults or
  # traps leaves its process's CUDA context unusable, and must not take the other checks with it.
  echo "== opt-in Hopper attention kernels (wgmma, warp-specialised TMA) vs the CPU reference"
  if NVLM_CHECK_OPT_IN=only limit 180 "$HERE/bin/tests/gpu_ops" every_cuda_op --test-threads=1 --nocapture; then
    echo "VERDICT opt-in-attention PASS"
  else
    echo "VERDICT opt-in-attention FAIL (the default kernels are unaffected: see the checks above)"
  fi

  echo "== nvlm selftest: every op, then the tensor-parallel code path as an NCCL group of one (demo model)"
  if limit 300 "$HERE/bin/nvlm" selftest --device cuda --image "$HERE/shapes.png" 2>&1; then echo "VERDICT selftest PASS"; else echo "VERDICT selftest FAIL"; status=1; fi

  echo "== the embedded demo model end to end (tiling, ViT, projector, splice, Qwen2, greedy): GPU (bf16) vs CPU (f32)"
  for q in "Which shape is on the left?" "What colour is the square?" "How many shapes are there?" "How many sides does a triangle have?"; do
    image=(--image "$HERE/shapes.png")
    case "$q" in *sides*) image=();; esac
    cpu=$(limit 120 "$HERE/bin/nvlm" generate --device cpu "${image[@]}" --prompt "$q" --json 2>/dev/null)
    gpu=$(limit 120 "$HERE/bin/nvlm" generate --device cuda "${image[@]}" --prompt "$q" --json)
    # The same without CUDA graphs (every decode step op by op).
    ops=$(NVLM_CUDA_GRAPHS=0 limit 120 "$HERE/bin/nvlm" generate --device cuda "${image[@]}" --prompt "$q" --json)
    if python3 - "$cpu" "$gpu" "$ops" <<'PY'
import json, sys
try:
    cpu, gpu, ops = (json.loads(a) for a in sys.argv[1:4])
except Exception as e:
    print("MODEL-CHECK could not parse the outputs:", e); sys.exit(1)
same = cpu["token_ids"] == gpu["token_ids"]
graphs = gpu["token_ids"] == ops["token_ids"]
print(f"MODEL-CHECK {cpu['text']!r} (cpu) vs {gpu['text']!r} (gpu), ids equal: {same}; "
      f"with and without CUDA graphs equal: {graphs}; gpu timings {gpu.get('timings')}")
sys.exit(0 if same and graphs else 1)
PY
    then echo "VERDICT demo-model: $q PASS"; else echo "VERDICT demo-model: $q FAIL"; status=1; fi
  done

  echo "== summary: GPU vs CPU reference (max_rel = largest |gpu - cpu| over max(|cpu|, the reference's RMS))"
  grep -h '^GPU-CHECK\|^NCCL-CHECK\|^MODEL-CHECK' "$LOG" | sed 's/^GPU-CHECK //'
  grep -h '^VERDICT' "$LOG"
  return $status
}

bench() {
  local status=0
  # Figures of an earlier run in the same folder must not pass for this one's.
  rm -f "$OUT/layers.jsonl" "$OUT/layers-opt-in.jsonl" "$OUT/layers-all.jsonl" "$OUT/torch-layers.jsonl" \
    "$OUT/gpu-results.json"
  echo "== benchmark: nvlm (cuBLASLt) vs PyTorch on the same shapes"
  limit 180 "$HERE/bin/matmul-bench" 2>&1
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    "$HERE/bin/matmul-bench" --list-gpu-shapes | limit 180 python3 "$HERE/torch_matmul.py"
  else
    echo "(PyTorch with CUDA not available: no PyTorch rows)"
  fi

  echo "== benchmark: Qwen2-72B and InternViT-6B layers and attention at real dimensions (random bf16 weights)"
  limit 300 "$HERE/bin/layers-bench" --json "$OUT/layers.jsonl" 2>&1 || { echo "VERDICT layers-bench FAIL"; status=1; }
  echo "== benchmark: attention with the opt-in Hopper kernels (wgmma, warp-specialised TMA), in a process of their own"
  limit 120 "$HERE/bin/layers-bench" --opt-in-kernels --json "$OUT/layers-opt-in.jsonl" 2>&1 \
    || echo "VERDICT layers-bench-opt-in FAIL (the default figures above stand)"
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== the same cases in PyTorch (eager; torch.compile within a time budget)"
    "$HERE/bin/layers-bench" --list-cases \
      | limit 300 python3 "$HERE/torch_layers.py" --json "$OUT/torch-layers.jsonl" --compile-budget-s 90 2>&1 \
      || echo "(torch_layers.py failed: PyTorch columns stay empty)"
  fi
  echo "== ours vs PyTorch vs roofline; the Hopper goals (written to OUT/gpu-results.json)"
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  cat "$OUT/layers.jsonl" "$OUT/layers-opt-in.jsonl" > "$OUT/layers-all.jsonl" 2>/dev/null
  python3 "$HERE/bench_report.py" "$OUT/layers-all.jsonl" "$OUT/torch-layers.jsonl" --gpu "${gpu:-unknown}" \
    --out "$OUT/gpu-results.json" 2>&1 || echo "(bench_report.py failed)"
  return $status
}

main > >(tee "$LOG") 2>&1
rc=$?
wait
exit $rc
