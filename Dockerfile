# The collector on its embedded SQLite spool. The spool lives on the /data volume so it
# outlives the container: accepted events survive a restart or an upgrade. The redis extra
# is installed too, for several collectors on one Redis (compose.yaml, docs/redis.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
RUN pip install ".[redis]" \
    && useradd --system --uid 10001 --no-create-home --home-dir /app collector \
    && mkdir -p /data \
    && chown collector /data

USER collector
VOLUME ["/data"]
ENV COLLECTOR_HOST=0.0.0.0 \
    COLLECTOR_PORT=8080 \
    COLLECTOR_SPOOL_URL=sqlite:////data/spool.db
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('COLLECTOR_PORT', '8080'); sys.exit(urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["collector"]
CMD ["serve"]
