#!/usr/bin/env bash
# GPU smoke test, for machines with NVIDIA GPUs (it cannot run on the CPU-only CI).
# Installs llmserve[gpu], serves configs/gpu-small.yaml through `llmserve run` with
# tensor_parallel_size 2 when two GPUs are present (1 otherwise), and runs the OpenAI
# end-to-end checks of tests/e2e/test_openai_api.py against it. Needs Hugging Face access.
#   scripts/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

gpus=$(nvidia-smi -L | grep -c '^GPU' || true)
if [ "$gpus" -lt 1 ]; then echo "no GPU listed by nvidia-smi -L" >&2; exit 1; fi
tp=$([ "$gpus" -ge 2 ] && echo 2 || echo 1)

DEVICE=gpu make install
work=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The e2e checks expect one model, the key test-key, a 64 KiB body limit and a short context.
.venv/bin/python - "$tp" "$work/smoke.yaml" <<'PY'
import sys, yaml
data = yaml.safe_load(open("configs/gpu-small.yaml"))
model = data["models"][0]
model["parallelism"] = {"tensor_parallel_size": int(sys.argv[1]), "placement_strategy": "STRICT_PACK"}
model["engine_kwargs"]["max_model_len"] = 1024
data["ingress"].update(api_keys=["test-key"], max_request_body_bytes=65536)
yaml.safe_dump(data, open(sys.argv[2], "w"))
PY
.venv/bin/llmserve validate "$work/smoke.yaml"

.venv/bin/llmserve run "$work/smoke.yaml" --port "$port" > "$work/llmserve.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
echo "serving with TP=$tp on $gpus GPU(s); log: $work/llmserve.log"
for _ in $(seq 900); do
  grep -q "is serving" "$work/llmserve.log" && break
  kill -0 $server 2>/dev/null || { tail -50 "$work/llmserve.log"; exit 1; }
  sleep 1
done
grep -q "is serving" "$work/llmserve.log" || { tail -50 "$work/llmserve.log"; exit 1; }

LLMSERVE_E2E_URL="http://127.0.0.1:$port" LLMSERVE_E2E_MODEL=qwen2.5-0.5b-instruct \
  .venv/bin/pytest -ra tests/e2e/test_openai_api.py
