# mstsb-onnx: set-up, tests, demo and benchmarks. Every target creates the venv it needs.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?=
DATA ?= ../shared/data/mstsb
PEERS_VENV ?= models/.peers-venv
OVEP_VENV := models/.ovep-venv

.PHONY: venv test test-fast figures demo serve standin eval bench load clean

# A bare `make` runs the fast tests: what a developer runs between edits.
.DEFAULT_GOAL := test-fast

venv: $(VENV)/.installed

# torch is installed first and pinned exactly: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

test: venv
	$(BIN)/python -m pytest -q -rs

test-fast: venv
	$(BIN)/python -m pytest -q -rs -m "not slow"

# Every figure README.md and docs/ quote must be in the results file they cite (also a test).
figures:
	python3 -m benchmarks.figures

standin: venv
	$(BIN)/python -m testmodels.standin

demo: venv
	$(BIN)/python -m benchmarks.demo $(if $(MODEL),--model $(MODEL),)

serve: venv
	$(BIN)/mstsb-onnx serve $$($(BIN)/python -m benchmarks.demo --export-only $(if $(MODEL),--model $(MODEL),) | tail -n 1) --port $(or $(PORT),8080)

eval: venv
	$(BIN)/python -m benchmarks.eval_sts --data $(DATA)/sts31-dev.csv

bench: venv
	$(BIN)/python -m benchmarks.bench --data $(DATA)/sentences-unscored.csv
	$(BIN)/python -m benchmarks.bench_ray --data $(DATA)/sentences-unscored.csv
	$(BIN)/python -m benchmarks.pinned --data $(DATA)/sentences-unscored.csv
	$(BIN)/python -m benchmarks.trim --data $(DATA)
	$(BIN)/python -m benchmarks.activations --data $(DATA)/sentences-unscored.csv
	# The peers (OpenVINO, CTranslate2) run in their own venv, never the runtime's.
	test -x $(PEERS_VENV)/bin/python || $(BIN)/python -c "from benchmarks.peers import setup_venv; from pathlib import Path; setup_venv(Path('$(PEERS_VENV)'))"
	$(PEERS_VENV)/bin/python -m benchmarks.peers --data $(DATA)/sentences-unscored.csv
	# onnxruntime-openvino replaces onnxruntime, so its EP gets a third venv.
	test -x $(OVEP_VENV)/bin/python || $(BIN)/python -m benchmarks.ovep --setup
	$(OVEP_VENV)/bin/python -m benchmarks.ovep --data $(DATA)/sentences-unscored.csv
	# RESULTS.md again, now with the Ray table just measured (bench.py wrote it before bench_ray ran).
	$(BIN)/python -m benchmarks.bench --data $(DATA)/sentences-unscored.csv --parts report

load: venv
	$(BIN)/python -m benchmarks.load --data $(DATA)/sentences-unscored.csv

clean:
	rm -rf $(VENV) build dist *.egg-info models .pytest_cache
