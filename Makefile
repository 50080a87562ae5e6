# dashboard-server: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEPS_STAMP := $(VENV)/.deps-installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: help venv build run test test-rust test-python lint fmt bench bench-engine system-deps \
	web-test-deps screenshot fuzz fuzz-rust fuzz-rust-smoke cargo-fuzz wheel bench-fanout bench-sources bench-filters \
	bench-ingest bench-ingest-fanout loadtest clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(DEPS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.5,<2"
	$(PIP) install -q $$($(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(repr(d) for d in p["dependencies"] + [x for k in ("test", "dev") for x in p["optional-dependencies"][k]]))' | tr -d "'")
	touch $@

venv: $(DEPS_STAMP) ## Create .venv with every runtime, test and dev dependency

build: $(DEPS_STAMP) ## Build the Rust engine in release mode into .venv (cached in target/)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q
	@$(PY) -c 'from dashboard_server.core.engine import load_engine; print("engine:", load_engine("native").module.__file__)'

run: build ## Build, then serve the live demo on http://127.0.0.1:8080 (no Redis needed)
	$(VENV)/bin/dashboard-server serve --host $(HOST) --port $(PORT)

system-deps: ## Install the Debian packages the tests use when missing: redis-server, nats-server, chromium, promtool (one apt-get update)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nats-server >/dev/null || missing="$$missing nats-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium fonts-dejavu-core"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: build system-deps web-test-deps lint test-rust fuzz-rust-smoke test-python ## Build, ensure redis-server, nats-server and chromium, lint, cargo test, a short Rust fuzz run, the whole pytest suite

web-test-deps: $(DEPS_STAMP) ## The playwright package for the browser tests (drives Debian's chromium; never `playwright install`)
	@$(PY) -c 'import playwright' 2>/dev/null || $(PIP) install -q "playwright>=1.40"

screenshot: build system-deps web-test-deps ## Screenshot of the live dashboard (demo feed) in headless Chromium: screenshots/dashboard.png
	$(PY) tests/web/screenshot.py --out screenshots/dashboard.png

test-rust: ## cargo test: the Rust core on its own, no Python
	cargo test -q

test-python: ## pytest against both engines (the native one must be built)
	DASHBOARD_REQUIRE_NATIVE=1 HYPOTHESIS_PROFILE=ci $(VENV)/bin/pytest -q

lint: $(DEPS_STAMP) ## ruff, mypy --strict, the import contract (lint-imports), rustfmt and clippy
	$(VENV)/bin/ruff check python tests benches fuzz
	$(VENV)/bin/ruff format --check python tests benches fuzz
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cargo fmt --check
	cargo clippy -q --all-targets --features python -- -D warnings

fmt: $(DEPS_STAMP) ## Format Python and Rust sources
	$(VENV)/bin/ruff format python tests benches fuzz
	$(VENV)/bin/ruff check --fix -q python tests benches fuzz || true
	cargo fmt

# Every benchmark runs and prints its figures even when an earlier one missed a goal; the target
# fails at the end, naming the ones that missed.
BENCHES := bench-engine bench-fanout bench-sources bench-filters bench-ingest
bench: build ## Run every benchmark, print the ratios and goals the issues ask for; fails if a goal is missed
	@failed=""; \
	for t in $(BENCHES); do \
		$(MAKE) --no-print-directory $$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo; echo "GOALS MISSED in:$$failed"; exit 1; fi

bench-engine: build ## Engine benchmarks: native vs pure vs the naive peer path vs orjson/ormsgpack
	$(VENV)/bin/pytest benches/bench_engine.py -q -p no:randomly --benchmark-only \
		--benchmark-json=.benchmarks/engine.json --benchmark-columns=min,median,mean,rounds \
		--benchmark-warmup=on --benchmark-min-rounds=20
	$(PY) benches/report.py .benchmarks/engine.json

bench-sources: build ## Ingest cost per message of each transport: in process (router) and end to end (real Redis, NATS, HTTP)
	@mkdir -p .benchmarks
	$(VENV)/bin/pytest benches/bench_sources.py -q -p no:randomly --benchmark-only \
		--benchmark-json=.benchmarks/sources.json --benchmark-columns=min,median,rounds
	$(PY) benches/bench_sources.py --report .benchmarks/sources.json
	$(PY) benches/bench_sources.py --e2e --count 20000

MATURIN ?= $(VENV)/bin/maturin

# With the venv's maturin (the default) the venv must exist; the Dockerfile passes its own.
wheel: $(if $(filter $(VENV)/bin/maturin,$(MATURIN)),$(DEPS_STAMP)) ## Release wheel and sdist into dist/ (cached in target/wheel)
	rm -f dist/dashboard_server-*
	$(MATURIN) build --release --interpreter $(PYTHON) --out dist --target-dir target/wheel
	$(MATURIN) sdist --out dist

FUZZ_SECONDS ?= 60
# Seconds per Rust fuzz target in fuzz-rust-smoke (four targets: about 28 s of fuzzing in all).
FUZZ_SMOKE_SECONDS ?= 7
FUZZ_RUST_TARGETS := json_decode msgpack_decode doc_ops stream_scan
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 allows them on stable. The fuzz crate
# (fuzz/Cargo.toml, its own workspace) builds into fuzz/target, apart from the engine's build.
CARGO_FUZZ := env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo fuzz

# $(call fuzz_rust,SECONDS): each Rust target for SECONDS from its seeds (fuzz/seeds-rust/TARGET)
# in a fresh corpus; a crash prints the whole log and fails (the input lands in fuzz/artifacts/).
define fuzz_rust
	@for t in $(FUZZ_RUST_TARGETS); do \
		corpus=$$(mktemp -d); log=$$(mktemp); \
		echo "cargo fuzz: $$t for $(1) s"; \
		if $(CARGO_FUZZ) run --fuzz-dir fuzz $$t $$corpus fuzz/seeds-rust/$$t -- \
			-max_total_time=$(1) -rss_limit_mb=2048 -max_len=4096 >$$log 2>&1; then \
			grep -E '^Done' $$log || true; \
		else \
			cat $$log; rm -rf $$corpus $$log; exit 1; \
		fi; \
		rm -rf $$corpus $$log; \
	done
endef

fuzz: build cargo-fuzz ## Fuzz the decoders and the client message parser with atheris, then the Rust targets, FUZZ_SECONDS each (default 60)
	$(PIP) install -q "atheris>=2.3"
	corpus=$$(mktemp -d) && $(PY) fuzz/fuzz_decoders.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=4096 $$corpus fuzz/seeds
	$(call fuzz_rust,$(FUZZ_SECONDS))

cargo-fuzz: ## Install cargo-fuzz when missing (cargo install --locked)
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

fuzz-rust: cargo-fuzz ## Coverage-guided fuzzing of the Rust JSON / MessagePack decoders and document ops, FUZZ_SECONDS each
	$(call fuzz_rust,$(FUZZ_SECONDS))

fuzz-rust-smoke: cargo-fuzz ## The Rust fuzz targets for FUZZ_SMOKE_SECONDS each (about 20 s of fuzzing, plus the first build)
	$(call fuzz_rust,$(FUZZ_SMOKE_SECONDS))

bench-fanout: $(DEPS_STAMP) ## Fan-out CPU per connection: raw-send floor vs websockets.broadcast() vs ours
	$(PY) benches/bench_fanout.py --clients 1000 --rounds 60
	$(PY) benches/bench_fanout.py --clients 1000 --rounds 60 --deflate

bench-filters: build ## Symbol filters: N groups of distinct 5-symbol filters vs one unfiltered group
	@uptime
	$(PY) benches/bench_filters.py --groups 1,10,100,1000 --flushes 30

bench-ingest: build system-deps ## Ingest: raw pub/sub floor vs the server's applied rate, PUBLISH -> client p50/p99 at several rates, Redis and NATS
	@mkdir -p .benchmarks
	$(PY) benches/bench_ingest.py --json .benchmarks/ingest.json

# About half the rate at which this machine saturates (the publisher's top rate through Redis,
# 380,000-460,000 msg/s in make bench-ingest; the server itself never saturates there).
INGEST_RATE ?= 200000
bench-ingest-fanout: build system-deps ## 5,000 clients at 10 Hz in 5 loadtest runs: baseline, then control (INGEST_RATE msg/s, default 200000, to a prefix the server ignores) and ingest (the same rate of orderbook) interleaved; goals ingest vs control
	@mkdir -p .benchmarks
	$(PY) benches/bench_ingest.py fanout --rate $(INGEST_RATE) --clients 5000 --json .benchmarks/ingest-fanout.json

loadtest: build ## 1,000/5,000 clients at 10 Hz, a 2,000-client storm, idle memory (docs/performance.md)
	@mkdir -p .benchmarks
	$(VENV)/bin/dashboard-server loadtest --clients 1000 --processes 1 --duration 30 --channels market_data --server-args=--demo-rate=30 --json .benchmarks/loadtest-1000.json
	$(VENV)/bin/dashboard-server loadtest --clients 5000 --processes 1 --duration 30 --channels market_data --server-args=--demo-rate=30 --json .benchmarks/loadtest-5000.json
	$(VENV)/bin/dashboard-server loadtest --clients 2000 --processes 2 --duration 5 --storm --channels market_data --server-args=--demo-rate=30 --json .benchmarks/loadtest-storm.json
	$(VENV)/bin/dashboard-server loadtest --clients 5000 --processes 2 --duration 5 --server-args=--demo=false --json .benchmarks/loadtest-idle.json

clean: ## Remove build artefacts and the venv
	rm -rf target dist $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
	find python -name '*.so' -delete
