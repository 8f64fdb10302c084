# Orchard MXNet client (CPU): core + client_mxnet with mxnet 1.9.1 on numpy 1.23.5.
#
# Online:  docker compose build client_mxnet     (BASE_IMAGE defaults to python:3.11-slim)
# Offline: make images OFFLINE=1                 (debootstrapped base + host wheelhouse)
#
# libmxnet.so needs libgomp.so.1 and libquadmath.so.0 from the system; the
# offline base has them, other bases get them from apt. Entrypoint and users
# as in docker/pytorch.Dockerfile.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/orchard && mkdir -p /wheels
COPY .wheelhous[e]/mxnet/ /wheels/
COPY docker/requirements/mxnet.txt docker/requirements/build.txt /tmp/requirements/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set --; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels \
      -r /tmp/requirements/mxnet.txt
COPY core/ /src/core/
COPY client_mxnet/ /src/client_mxnet/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set --; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels /src/core /src/client_mxnet \
    && /opt/orchard/bin/pip check \
    && /opt/orchard/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="orchard-client-mxnet" \
      org.opencontainers.image.description="Orchard federated-learning client for Apache MXNet (CPU)"
RUN missing=""; \
    for pkg in libgomp1:libgomp.so.1 libquadmath0:libquadmath.so.0 iptables:iptables; do \
      name=${pkg%%:*}; file=${pkg#*:}; \
      if [ "$file" = iptables ]; then command -v iptables >/dev/null || missing="$missing $name"; \
      elif ! ldconfig -p | grep -q "$file"; then missing="$missing $name"; fi; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $missing \
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
    ORCHARD_MODEL=mnist-mlp \
    ORCHARD_DATASET=mnist \
    ORCHARD_DEVICE=cpu \
    MXNET_HOME=/home/orchard/.mxnet
USER orchard
WORKDIR /home/orchard
ENTRYPOINT ["python", "-m", "orchard.netsim", "--user", "orchard", "--"]
CMD ["python", "-m", "orchard_mxnet", "client"]
