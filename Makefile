# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# lava-nc 0.10 needs Python 3.10: pyenv's 3.10 first (its bare shim fails), then python3.10 on PATH
PYTHON310 ?= $(shell p=$$(pyenv prefix 3.10 2>/dev/null | head -1); \
	if [ -n "$$p" ] && [ -x "$$p/bin/python" ]; then echo "$$p/bin/python"; \
	elif command -v python3.10 >/dev/null 2>&1 && python3.10 -c '' 2>/dev/null; then command -v python3.10; \
	fi)
# the core without Lava (make test-core): Python 3.12 from pyenv, else python3.12 on PATH
PYTHON312 ?= $(shell p=$$(pyenv prefix 3.12 2>/dev/null | head -1); \
	if [ -n "$$p" ] && [ -x "$$p/bin/python" ]; then echo "$$p/bin/python"; \
	elif command -v python3.12 >/dev/null 2>&1 && python3.12 -c '' 2>/dev/null; then command -v python3.12; \
	fi)
CORE := .venv-core
MODEL := examples/digits_cnn.onnx
# pip with 3 tries (a dropped download must not fail a fresh install)
PIP_RETRY := .ci/pip-retry
NETX_PKGS := lava-dl==0.6.0 'opencv-python-headless<4.12' torchvision==0.29.1
# the NIR peer of tests/backends/test_nir.py: sinabs pins nir<=1.0.4 and wants samna (a Speck driver its
# NIR code does not use), so it goes in without its dependencies, like lava-dl
NIR_PEER_PKGS := sinabs==3.1.3 nirtorch==2.6 pbr

.PHONY: venv demo test test-core lint docs bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@if [ -z "$(PYTHON310)" ]; then echo "error: Python 3.10 not found (pyenv install 3.10, or put python3.10 on PATH)" >&2; exit 2; fi
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PIP_RETRY) $(PY) -m pip install -q --upgrade pip
	$(PIP_RETRY) $(PY) -m pip install -q -e '.[dev,loihi]'
	# lava-dl's netx reader (for the netx export test): it pins torch<2.4, so without its deps
	$(PIP_RETRY) $(PY) -m pip install -q --no-deps $(NETX_PKGS) $(NIR_PEER_PKGS)
	@touch $@

demo: venv
	$(VENV)/bin/snn-compile $(MODEL) --target ir --out out/demo-ir
	$(VENV)/bin/snn-compile $(MODEL) --target gpu --dataset digits --timesteps 64 --out out/demo-gpu
	$(VENV)/bin/snn-compile $(MODEL) --target loihi --dataset digits --timesteps 32 --eval-samples 100 --out out/demo-loihi

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

# The core on Python 3.12 without Lava: build the wheel, install it into .venv-core (created
# on first use), run its snn-compile on the example from outside the source tree, then every
# test (Lava tests skip: Lava is not installed there).
test-core:
	@if [ -z "$(PYTHON312)" ]; then echo "error: Python 3.12 not found (pyenv install 3.12, or put python3.12 on PATH)" >&2; exit 2; fi
	@test -x $(CORE)/bin/python || $(PYTHON312) -m venv $(CORE)
	$(PIP_RETRY) $(CORE)/bin/python -m pip install -q --upgrade pip
	# setuptools leaves build/ behind, which ruff would take for the tests' build.py
	rm -rf dist build && $(CORE)/bin/python -m pip wheel -q --no-deps . -w dist && rm -rf build
	$(PIP_RETRY) $(CORE)/bin/python -m pip install -q "$$(ls dist/snncompile-*.whl)[dev]"
	$(CORE)/bin/python -m pip install -q --force-reinstall --no-deps dist/snncompile-*.whl
	$(PIP_RETRY) $(CORE)/bin/python -m pip install -q --no-deps $(NIR_PEER_PKGS)
	cd $$(mktemp -d) && $(CURDIR)/$(CORE)/bin/snn-compile $(CURDIR)/$(MODEL) --target gpu \
		--dataset digits --timesteps 16 --out $(CURDIR)/out/wheel-check
	$(CORE)/bin/python -m pytest -q -p no:cacheprovider tests

# the layering contracts (pyproject [tool.importlinter]) and ruff
lint: venv
	$(VENV)/bin/lint-imports
	$(PY) -m ruff check .

# the documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or anchor, or a
# page left out of the nav, fails the build. guide/cli.md and index.md are generated (docs/hooks.py)
docs: venv
	$(PIP_RETRY) $(PY) -m pip install -q -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# the benchmarks are modules of the benchmarks package, run from the repository root
# (benchmarks/README.md: which script answers which question, and where its table is)
bench: venv
	$(PIP_RETRY) $(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.gpu_sim
	$(PY) -m benchmarks.vs_spikingjelly
	$(PY) -m benchmarks.vs_spikingjelly --splits 3 --out benchmarks/results/vs_spikingjelly_3splits.json
	$(PY) -m benchmarks.maxpool
	$(PY) -m benchmarks.lava_sim
	$(PY) -m benchmarks.thresholds
	$(PY) -m benchmarks.latency
	$(PY) -m benchmarks.scale --rounds 2 --repeats 2
	$(PY) -m benchmarks.finetune

clean:
	rm -rf $(VENV) $(CORE) out dist site .pytest_cache
