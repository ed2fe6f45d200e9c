# One image for every process of the system: `bnpl serve`, `bnpl consume <group>`, `bnpl train`, …
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    BNPL_DATA_DIR=/var/lib/bnpl \
    NUMBA_CACHE_DIR=/var/lib/bnpl/numba-cache

WORKDIR /app
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
COPY deploy/entrypoint.sh /usr/local/bin/bnpl-entrypoint
RUN pip install '.[server]' \
    && useradd --system --uid 10001 --home-dir /var/lib/bnpl --create-home bnpl

USER bnpl
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["bnpl-entrypoint", "bnpl"]
CMD ["serve", "--host", "0.0.0.0"]
