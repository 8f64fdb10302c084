# Container targets (included by the Makefile). See docker/README.md.
#
#   make images              build orchard/server, orchard/client-pytorch, orchard/client-mxnet;
#                            offline (debootstrapped base + wheelhouse) when no registry answers
#   make images OFFLINE=1    force the offline path;  OFFLINE=0 forces the online one
#   make images-offline      the same as OFFLINE=1
#   make base-image          orchard/base:bookworm from debootstrap, no registry needed
#   make wheelhouse          .wheelhouse/<component>/ from PyPI, on the host
#   make certs               development CA and server certificate in deploy/certs/
#                            (DOCKER_CLIENT_NAMES=a,b adds mutual-TLS client certificates)
#   make gpu-image           CUDA PyTorch client (and MXNet with GPU=mxnet), from Dockerfile.gpu
#   make compose-up / compose-down / compose-logs     the stack of docker-compose.yml
#   make compose-results     copy history, plots and checkpoints out of the stack (RESULTS=./orchard-results)
#   make compose-crossframework   the PyTorch + MXNet Fashion-MNIST federation (docker-compose.crossframework.yml)
#   make swarm-up / swarm-down                         the same stack on a Docker Swarm
#   make image-sizes         sizes of the built images
#   make test-containers     only the container tests (pytest -m docker)

# The makefile that includes this one (or this one, run alone), for recursive calls.
DOCKER_MAKEFILE := $(firstword $(MAKEFILE_LIST))
DOCKER ?= docker
COMPOSE ?= $(DOCKER) compose
DOCKER_TAG ?= latest
DOCKER_OFFLINE_BASE ?= orchard/base:bookworm
DOCKER_ONLINE_BASE ?= python:3.11-slim
DOCKER_COMPONENTS := server pytorch mxnet
# Image titles (LABEL org.opencontainers.image.title): the previous build of
# each becomes an untagged image when rebuilt; `images` prunes those.
DOCKER_TITLES := orchard-server orchard-client-pytorch orchard-client-mxnet
WHEELHOUSE ?= .wheelhouse
# pip for the wheelhouse: the project's environment when it exists (CI's system
# python3 may have no pip), else python3.
DOCKER_PIP_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
DOCKER_CERTS ?= deploy/certs
# Names the development server certificate is valid for (comma-separated DNS names or IPs).
DOCKER_CERT_NAMES ?= server,localhost,127.0.0.1
# Client names that get a client certificate for mutual TLS (comma-separated; none by default).
DOCKER_CLIENT_NAMES ?=
STACK ?= orchard
OFFLINE ?= auto
GPU ?= pytorch
# COMPOSE_BAKE=false: build through the engine's BuildKit directly (no buildx here).
DOCKER_ENV := COMPOSE_BAKE=false ORCHARD_TAG=$(DOCKER_TAG)

.PHONY: images images-offline base-image wheelhouse certs gpu-image image-sizes \
  compose-up compose-down compose-logs compose-results compose-crossframework \
  swarm-up swarm-down test-containers

## images: build the three images (offline when no registry is reachable, or OFFLINE=1)
images:
	@set -e; offline="$(OFFLINE)"; \
	if [ "$$offline" = auto ]; then \
	  if timeout 20 $(DOCKER) pull -q $(DOCKER_ONLINE_BASE) >/dev/null 2>&1; then offline=0; \
	  else offline=1; echo "images: no registry reachable: building offline"; fi; \
	fi; \
	if [ "$$offline" = 1 ]; then \
	  $(MAKE) --no-print-directory -f $(DOCKER_MAKEFILE) base-image wheelhouse; \
	  base=$(DOCKER_OFFLINE_BASE); \
	else base=$(DOCKER_ONLINE_BASE); fi; \
	start=$$(date +%s); \
	$(DOCKER_ENV) ORCHARD_OFFLINE=$$offline ORCHARD_BASE_IMAGE=$$base \
	  $(COMPOSE) -f docker-compose.yml build server client_pytorch client_mxnet; \
	echo "images: built in $$(( $$(date +%s) - start )) s (base $$base, offline=$$offline)"; \
	for title in $(DOCKER_TITLES); do \
	  $(DOCKER) image prune -f --filter label=org.opencontainers.image.title=$$title >/dev/null; \
	done; \
	$(MAKE) --no-print-directory -f $(DOCKER_MAKEFILE) image-sizes

images-offline:
	$(MAKE) --no-print-directory -f $(DOCKER_MAKEFILE) images OFFLINE=1

## base-image: Debian bookworm + python3 via debootstrap, imported without a registry
base-image:
	@$(DOCKER) image inspect $(DOCKER_OFFLINE_BASE) >/dev/null 2>&1 \
	  && echo "base-image: $(DOCKER_OFFLINE_BASE) exists (docker rmi it to rebuild)" \
	  || docker/base-image.sh $(DOCKER_OFFLINE_BASE)

## wheelhouse: wheels of every image, downloaded on the host (refreshed when requirements change)
wheelhouse: $(foreach c,$(DOCKER_COMPONENTS),$(WHEELHOUSE)/$(c)/.complete)

$(WHEELHOUSE)/%/.complete: docker/requirements/%.txt docker/requirements/build.txt docker/wheelhouse.sh
	WHEELHOUSE=$(WHEELHOUSE) PYTHON=$(DOCKER_PIP_PYTHON) docker/wheelhouse.sh $*
	touch $@

## certs: a development CA and a server certificate (never for production)
certs: $(DOCKER_CERTS)/server.pem

$(DOCKER_CERTS)/server.pem: docker/dev-certs.sh
	docker/dev-certs.sh $(DOCKER_CERTS) $(DOCKER_CERT_NAMES) $(DOCKER_CLIENT_NAMES)

## gpu-image: the CUDA client image(s) of Dockerfile.gpu (GPU=pytorch, mxnet or "pytorch mxnet")
gpu-image:
	@set -e; for target in $(GPU); do \
	  case $$target in \
	    pytorch) service=client_pytorch;; \
	    mxnet) service=client_mxnet_gpu;; \
	    *) echo "gpu-image: GPU=$$target: choose pytorch or mxnet" >&2; exit 2;; \
	  esac; \
	  echo "gpu-image: orchard/client-$$target-gpu:$(DOCKER_TAG)"; \
	  $(DOCKER_ENV) $(COMPOSE) -f docker-compose.yml -f docker-compose.gpu.yml \
	    --profile mxnet-gpu build $$service; \
	done

image-sizes:
	@$(DOCKER) image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
	  | grep -E '^orchard/(server|client-[a-z-]+|base):' | sort

compose-up:
	$(DOCKER_ENV) $(COMPOSE) up -d
	@echo "compose-up: follow with 'make compose-logs'; results on the 'state' volume ('make compose-results')"

compose-down:
	$(DOCKER_ENV) $(COMPOSE) down --remove-orphans

compose-logs:
	$(DOCKER_ENV) $(COMPOSE) logs -f

RESULTS ?= orchard-results
## compose-results: the server's state volume (history, plots, checkpoints, archived runs) into $(RESULTS)/
compose-results:
	$(DOCKER_ENV) $(COMPOSE) cp server:/var/lib/orchard/state $(RESULTS)
	@echo "compose-results: copied into $(RESULTS)/ (owned by you)"

## compose-crossframework: PyTorch and MXNet clients train one model on Fashion-MNIST, with an evaluator
compose-crossframework:
	$(DOCKER_ENV) $(COMPOSE) -f docker-compose.yml -f docker-compose.crossframework.yml \
	  up --abort-on-container-failure --exit-code-from server

## swarm-up: deploy docker-stack.yml (a one-node swarm is created when none is active)
swarm-up:
	@state=$$($(DOCKER) info --format '{{.Swarm.LocalNodeState}}'); \
	if [ "$$state" != active ]; then \
	  echo "swarm-up: no swarm; creating a one-node swarm on 127.0.0.1"; \
	  $(DOCKER) swarm init --advertise-addr 127.0.0.1 >/dev/null; \
	fi
	$(DOCKER_ENV) $(DOCKER) stack deploy --resolve-image never -c docker-stack.yml $(STACK)

swarm-down:
	$(DOCKER) stack rm $(STACK)

test-containers:
	$(or $(BIN),.venv/bin)/pytest -m docker tests/containers $(PYTEST_ARGS)
