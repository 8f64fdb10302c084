# Orchard aggregation server: core + server, no ML framework.
#
# Online:  docker compose build server        (BASE_IMAGE defaults to python:3.11-slim)
# Offline: make images OFFLINE=1              (debootstrapped base + host wheelhouse)
#
# Build context: the repository root. Two stages: the virtual environment is
# built in the first at the same path it has in the second, then copied, so
# no wheel, compiler cache or source tree reaches the image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# OFFLINE=1: install only from the wheelhouse (.wheelhouse/server, made by
# docker/wheelhouse.sh on the host), never from an index.
ARG OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/orchard && mkdir -p /wheels
# The wildcard lets the build go on without a wheelhouse (online builds).
COPY .wheelhous[e]/server/ /wheels/
COPY docker/requirements/server.txt docker/requirements/build.txt /tmp/requirements/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set --; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels \
      -r /tmp/requirements/server.txt
COPY core/ /src/core/
COPY server/ /src/server/
RUN if [ "$OFFLINE" = 1 ]; then set -- --no-index; else set --; fi; \
    /opt/orchard/bin/pip install --quiet "$@" --find-links /wheels /src/core /src/server \
    && /opt/orchard/bin/pip check \
    && /opt/orchard/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="orchard-server" \
      org.opencontainers.image.description="Orchard federated-learning aggregation server"
RUN groupadd --system --gid 10001 orchard \
    && useradd --system --uid 10001 --gid orchard --home-dir /var/lib/orchard --create-home \
      --shell /usr/sbin/nologin orchard \
    && mkdir -p /var/lib/orchard/state /etc/orchard /data \
    && chown -R orchard:orchard /var/lib/orchard /data
COPY --from=build /opt/orchard /opt/orchard
COPY docker/healthcheck.py /opt/orchard/bin/orchard-healthcheck
COPY deploy/server.toml /etc/orchard/server.toml
# The reference NumPy client (orchard.examples.logreg, in core) runs from this
# image too, behind the same link emulator as the framework clients, and so
# does orchard-data (python -m orchard.data) on the clients' /data volume.
COPY deploy/network-profiles.toml /etc/orchard/network-profiles.toml
ENV PATH=/opt/orchard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORCHARD_NET_PROFILES=/etc/orchard/network-profiles.toml \
    ORCHARD_CONFIG=/etc/orchard/server.toml \
    ORCHARD_ADDRESS=0.0.0.0:8080 \
    ORCHARD_STATE_DIR=/var/lib/orchard/state \
    MPLCONFIGDIR=/tmp/matplotlib
USER orchard
WORKDIR /var/lib/orchard
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=5 \
  CMD ["python", "/opt/orchard/bin/orchard-healthcheck"]
ENTRYPOINT ["python", "-m", "orchard_server"]
