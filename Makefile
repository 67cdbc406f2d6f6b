# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# lava-nc 0.10 needs Python 3.10: pyenv's 3.10 first (its bare shim fails), then python3.10 on PATH
PYTHON310 ?= $(shell p=$$(pyenv prefix 3.10 2>/dev/null | head -1); \
	if [ -n "$$p" ] && [ -x "$$p/bin/python" ]; then echo "$$p/bin/python"; \
	elif command -v python3.10 >/dev/null 2>&1 && python3.10 -c '' 2>/dev/null; then command -v python3.10; \
	fi)
MODEL := examples/digits_cnn.onnx
NETX_PKGS := lava-dl==0.6.0 'opencv-python-headless<4.12' torchvision==0.29.1

.PHONY: venv demo test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@if [ -z "$(PYTHON310)" ]; then echo "error: Python 3.10 not found (pyenv install 3.10, or put python3.10 on PATH)" >&2; exit 2; fi
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# lava-dl's netx reader (for the netx export test): it pins torch<2.4, so without its deps
	$(PY) -m pip install -q --no-deps $(NETX_PKGS)
	@touch $@

demo: venv
	$(VENV)/bin/snn-compile $(MODEL) --target ir --out out/demo-ir
	$(VENV)/bin/snn-compile $(MODEL) --target gpu --dataset digits --timesteps 64 --out out/demo-gpu
	$(VENV)/bin/snn-compile $(MODEL) --target loihi --dataset digits --timesteps 32 --eval-samples 100 --out out/demo-loihi

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

# the layering contracts (pyproject [tool.importlinter]) and ruff
lint: venv
	$(VENV)/bin/lint-imports
	$(PY) -m ruff check .

bench: venv
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benchmarks/gpu_sim.py
	$(PY) benchmarks/vs_spikingjelly.py
	$(PY) benchmarks/lava_sim.py
	$(PY) benchmarks/thresholds.py
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/finetune.py

clean:
	rm -rf $(VENV) out .pytest_cache
