# One image for every process of the system: `bnpl serve`, `bnpl consume <group>`, `bnpl train`, …
# Two stages: the build stage installs the project and its dependencies into /opt/venv; the runtime stage copies only
# that venv (no compilers, no pip cache, no source tree) and runs as an unprivileged user.
# The base is pinned by digest (python:3.11-slim, linux/amd64 + arm64 index); refresh it with
# `docker buildx imagetools inspect python:3.11-slim` when updating.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY alerting ./alerting
COPY analysis ./analysis
COPY app ./app
COPY bench ./bench
COPY bnpl_cli ./bnpl_cli
COPY common ./common
COPY consumers ./consumers
COPY datagen ./datagen
COPY decision ./decision
COPY drift ./drift
COPY features ./features
COPY governance ./governance
COPY performance ./performance
COPY producers ./producers
COPY registry ./registry
COPY schemas ./schemas
COPY traffic ./traffic
COPY training ./training
COPY warehouse ./warehouse
RUN /opt/venv/bin/pip install --no-compile '.[server]'

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_DISABLE_TELEMETRY=true \
    BNPL_DATA_DIR=/var/lib/bnpl \
    NUMBA_CACHE_DIR=/var/lib/bnpl/numba-cache
RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/bnpl --create-home bnpl
COPY --from=build /opt/venv /opt/venv
COPY deploy/entrypoint.sh /usr/local/bin/bnpl-entrypoint
WORKDIR /var/lib/bnpl
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["bnpl-entrypoint", "bnpl"]
CMD ["serve", "--host", "0.0.0.0"]
