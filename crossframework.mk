# Cross-framework federations (PyTorch + MXNet training one model). Included by
# the Makefile after BIN and MXBIN are defined.

FASHION_MODEL ?= mnist-mlp
FASHION_ROUNDS ?= 5
FASHION_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: fashion-federation

## fashion-federation: a server, one PyTorch and one MXNet client train one model on Fashion-MNIST; prints accuracy per round
fashion-federation: $(BIN)/.ok $(MXBIN)/.ok
	@test -f $(FASHION_DIR)/train-images-idx3-ubyte.gz || \
	  { echo "$(FASHION_DIR): no Fashion-MNIST files (apt-get install dataset-fashion-mnist)" >&2; exit 2; }
	ORCHARD_MXNET_PYTHON=$(abspath $(MXBIN)/python) $(BIN)/python -m tests.crossframework.mixed \
	  --dataset fashion-mnist --data-dir $(FASHION_DIR) --model $(FASHION_MODEL) \
	  --rounds $(FASHION_ROUNDS) --workdir runs/fashion-federation
