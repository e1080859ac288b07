# One image for the consent server and its delivery workers.
#   server: the default command, consent-server
#   worker: python -m consent_server.worker
# Build: docker build -t consent-authority:0.1.0 .   (or: docker compose build)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the server and the client, installed as `make install`
#    does (the same pip commands, without -e and without the dev extras) --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY clients/python clients/python
COPY consent_server consent_server
RUN python -m pip install --quiet --upgrade pip \
    && python -m pip install --quiet clients/python .

# -- runtime: the virtualenv alone, no sources, no build tools, an unprivileged user --
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 consent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin consent
COPY --from=build /opt/venv /opt/venv
# Inside a container the server listens on every interface, so API keys are required
# (CONSENT_REQUIRE_AUTH=auto); give the first admin key in CONSENT_BOOTSTRAP_ADMIN_KEY.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSENT_LISTEN=0.0.0.0:50051
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# `python -m` puts the working directory on sys.path: keep it one nobody can write to.
WORKDIR /
# gRPC 50051, HTTP edge 8080 (CONSENT_HTTP_LISTEN), metrics 9464 (CONSENT_METRICS_LISTEN).
EXPOSE 50051 8080 9464
# grpc.health.v1 against CONSENT_LISTEN's port (TLS when CONSENT_TLS_CERT is set).
# A worker container has no gRPC port: give it
#   python -m consent_server.healthcheck --http http://127.0.0.1:9464/metrics
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "consent_server.healthcheck"]
CMD ["consent-server"]
