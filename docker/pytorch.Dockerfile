# Orchard PyTorch client (CPU): core + client_pytorch with torch 2.13.0+cpu.
#
# Online:  docker compose build client_pytorch   (BASE_IMAGE defaults to python:3.11-slim;
#          the "+cpu" torch build comes from PyTorch's own index, TORCH_INDEX_URL)
# Offline: make images OFFLINE=1                 (debootstrapped base + host wheelhouse)
#
# The entrypoint is the link emulator (orchard.netsim): with no ORCHARD_NET_*
# settings it just runs the client; with a profile it puts the emulated link
# between the client and the server. The image runs as user orchard; only a
# profile with packet loss needs the container started as root with NET_ADMIN,
# and the entrypoint drops to orchard right after adding the iptables rule.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG OFFLINE=0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/orchard && mkdir -p /wheels
COPY .wheelhous[e]/pytorch/ /wheels/
COPY docker/requirements/pytorch.txt docker/requirements/build.txt /tmp/requirements/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set -- --extra-index-url "$TORCH_INDEX_URL"; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels \
      -r /tmp/requirements/pytorch.txt
COPY core/ /src/core/
COPY client_pytorch/ /src/client_pytorch/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set -- --extra-index-url "$TORCH_INDEX_URL"; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels \
      /src/core /src/client_pytorch \
    && /opt/orchard/bin/pip check \
    && /opt/orchard/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="orchard-client-pytorch" \
      org.opencontainers.image.description="Orchard federated-learning client for PyTorch (CPU)"
# iptables is only used for packet loss; the offline base already has it.
RUN if ! command -v iptables >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends iptables \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 orchard \
    && useradd --system --uid 10001 --gid orchard --home-dir /home/orchard --create-home \
      --shell /usr/sbin/nologin orchard \
    && mkdir -p /data /etc/orchard && chown orchard:orchard /data
COPY --from=build /opt/orchard /opt/orchard
COPY deploy/network-profiles.toml /etc/orchard/network-profiles.toml
ENV PATH=/opt/orchard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORCHARD_DATA_DIR=/data \
    ORCHARD_NET_PROFILES=/etc/orchard/network-profiles.toml \
    ORCHARD_MODEL=cifar10-cnn \
    ORCHARD_DATASET=cifar10 \
    ORCHARD_DEVICE=cpu
USER orchard
WORKDIR /home/orchard
ENTRYPOINT ["python", "-m", "orchard.netsim", "--user", "orchard", "--"]
CMD ["python", "-m", "orchard_pytorch", "client"]
