# Orchard: one place for every developer and CI command.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
MXVENV := .venv-mxnet
BIN := $(VENV)/bin
MXBIN := $(MXVENV)/bin
BUF := .tools/node_modules/.bin/buf
PROTO_OUT := core
PROTOS := $(wildcard protos/orchard/v1/*.proto)
#: Image of the last released protos (orchard.v1 1.0.0), what buf breaking guards.
BUF_BASELINE := protos/baseline/orchard-v1.0.0.binpb
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_FLOWER_ARGS ?=

.PHONY: setup proto check check-proto-stale lint typecheck buf-lint buf-breaking test test-main test-mxnet bench bench-client bench-large bench-flower fuzz clean

## setup: create both Python environments, install buf and (as root) Debian's Fashion-MNIST
setup: $(BIN)/.ok $(MXBIN)/.ok $(BUF) fashion-data

$(BIN)/.ok: requirements/dev.txt core/pyproject.toml server/pyproject.toml client_pytorch/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@

$(MXBIN)/.ok: requirements/mxnet.txt core/pyproject.toml client_mxnet/pyproject.toml
	test -x $(MXBIN)/python || $(PY) -m venv $(MXVENV)
	$(MXBIN)/pip install -q -r requirements/mxnet.txt
	touch $@

$(BUF): .tools/package.json
	cd .tools && npm install --silent --no-audit --no-fund
	touch $@

## proto: regenerate the Python code of protos/ (never edit core/orchard/v1 by hand)
proto: $(BIN)/.ok
	rm -f $(PROTO_OUT)/orchard/v1/*_pb2*.py $(PROTO_OUT)/orchard/v1/*_pb2*.pyi
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=quiet:$(PROTO_OUT) --mypy_grpc_out=quiet:$(PROTO_OUT) $(PROTOS)

## check: formatting, lint, types, buf lint/breaking, stale generated code
check: lint typecheck buf-lint buf-breaking check-proto-stale

lint: $(BIN)/.ok
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(BIN)/.ok
	$(BIN)/mypy core/orchard server/orchard_server client_pytorch/orchard_pytorch client_mxnet/orchard_mxnet benchmarks tests

buf-lint: $(BUF)
	$(BUF) lint

## buf-breaking: the protos must stay compatible with the released v1 baseline
## (always) and with branch main (when there is one); protos/README.md says
## when the baseline may be refreshed.
buf-breaking: $(BUF)
	$(BUF) breaking --against $(BUF_BASELINE)
	@echo "buf breaking: compatible with the released baseline $(BUF_BASELINE)"
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $(BUF) breaking --against ".git#branch=main" && echo "buf breaking: compatible with main"; \
	else echo "buf breaking: no buf.yaml on branch main, checked the baseline only"; fi

check-proto-stale: $(BIN)/.ok
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=quiet:$$tmp --mypy_grpc_out=quiet:$$tmp $(PROTOS) && \
	if diff -r -x __init__.py -x __pycache__ $$tmp/orchard/v1 $(PROTO_OUT)/orchard/v1; then echo "generated code is up to date"; \
	else echo "generated code is stale: run 'make proto' and commit the result" >&2; exit 1; fi

## test: the whole test suite, in both environments
test: setup check test-main test-mxnet

test-main: $(BIN)/.ok
	$(BIN)/pytest --ignore=tests/client_mxnet $(PYTEST_ARGS)

test-mxnet: $(MXBIN)/.ok $(BIN)/.ok
	ORCHARD_SERVER_PYTHON=$(abspath $(BIN)/python) $(MXBIN)/pytest tests/core tests/client_mxnet tests/contract $(PYTEST_ARGS)

## bench: round cadence, server memory, the gRPC transport floor under them, serde and
## aggregation costs, and what a PyTorch client adds to local training: one JSON line per
## case on stdout and in runs/bench.jsonl
## (several minutes; docs/performance.md explains them)
bench: $(BIN)/.ok
	mkdir -p runs
	set -o pipefail; $(BIN)/python -m benchmarks $(BENCH_ARGS) | tee runs/bench.jsonl
	$(BIN)/python -m benchmarks.soak | tee runs/soak.jsonl
	$(BIN)/python -m benchmarks.simulation | tee runs/bench-simulation.jsonl

## bench-client: only the client-overhead suite (a federated PyTorch client against the
## centralized script on CIFAR-10-format files; BENCH_CLIENT_ARGS e.g. --client-repeats 4)
bench-client: $(BIN)/.ok
	mkdir -p runs
	set -o pipefail; $(BIN)/python -m benchmarks --suite client $(BENCH_CLIENT_ARGS) | tee runs/bench-client.jsonl

## bench-large: the 1 GiB model (268M float32 parameters) with 2 clients
bench-large: $(BIN)/.ok
	mkdir -p runs
	set -o pipefail; $(BIN)/python -m benchmarks --suite rounds --round-cases 1gib:2 | tee runs/bench-large.jsonl

## bench-flower: optional side-by-side with Flower 1.42 (its own .venv-flower; the main bench
## never needs it). flwr's certifi pin may not resolve: its other requirements go first,
## then flwr with --no-deps.
FLVENV := .venv-flower
FLOWER_VERSION := 1.42.0
$(FLVENV)/.ok: benchmarks/flower/requirements.txt
	test -x $(FLVENV)/bin/python || $(PY) -m venv $(FLVENV)
	$(FLVENV)/bin/pip install -q -r benchmarks/flower/requirements.txt
	$(FLVENV)/bin/pip install -q --no-deps flwr==$(FLOWER_VERSION)
	touch $@

bench-flower: $(BIN)/.ok $(FLVENV)/.ok
	mkdir -p runs
	set -o pipefail; $(BIN)/python -m benchmarks.flower $(BENCH_FLOWER_ARGS) | tee runs/bench-flower.jsonl

## fuzz: longer fuzzing than make test's: serde under atheris, the servicer under hypothesis
FUZZ_SECONDS ?= 120
FUZZ_EXAMPLES ?= 200
fuzz: $(BIN)/.ok
	$(BIN)/python -m tests.helpers.fuzz --seconds $(FUZZ_SECONDS)
	set -o pipefail; ORCHARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -s -p no:cacheprovider \
	  --timeout=3600 tests/server/test_servicer_fuzz.py tests/core/test_serde_fuzz.py | grep -E '^\{|passed|failed'

clean:
	rm -rf $(VENV) $(MXVENV) $(FLVENV) .tools/node_modules .mypy_cache .ruff_cache .pytest_cache runs

include crossframework.mk
include docker.mk
