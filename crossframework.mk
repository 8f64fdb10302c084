# Cross-framework federations (PyTorch + MXNet training one model). Included by
# the Makefile after BIN and MXBIN are defined.

FASHION_MODEL ?= mnist-mlp
FASHION_ROUNDS ?= 5
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
FASHION_PACKAGE := dataset-fashion-mnist
FASHION_FILE := $(FASHION_DIR)/train-images-idx3-ubyte.gz

.PHONY: fashion-federation fashion-data

## fashion-data: Debian's dataset-fashion-mnist, installed with apt when run as root (part of setup)
# Without root it prints the one command to run: the rest of setup (and every
# test) needs no dataset, so this never fails setup. apt-get update runs only
# when the package lists do not know the package yet.
fashion-data:
	@if [ -f $(FASHION_FILE) ]; then \
	  echo "fashion-data: Fashion-MNIST is in $(FASHION_DIR)"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "fashion-data: no Fashion-MNIST in $(FASHION_DIR); for make fashion-federation run: sudo apt-get install $(FASHION_PACKAGE)"; \
	else \
	  echo "fashion-data: installing Debian's $(FASHION_PACKAGE) (30 MB)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(FASHION_PACKAGE) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(FASHION_PACKAGE) >/dev/null; } || \
	    echo "fashion-data: apt-get could not install $(FASHION_PACKAGE); make fashion-federation needs it" >&2; \
	fi

## fashion-federation: a server, one PyTorch and one MXNet client train one model on Fashion-MNIST; prints accuracy per round
fashion-federation: $(BIN)/.ok $(MXBIN)/.ok
	@test -f $(FASHION_FILE) || \
	  { echo "$(FASHION_DIR): no Fashion-MNIST files: run 'make setup' as root, or: sudo apt-get install $(FASHION_PACKAGE)" >&2; exit 2; }
	$(BIN)/python -m orchard.launch fashion-federation --mxnet-python $(abspath $(MXBIN)/python) \
	  --dataset fashion-mnist --data-dir $(FASHION_DIR) --model $(FASHION_MODEL) \
	  --rounds $(FASHION_ROUNDS) --run-dir runs/fashion-federation
