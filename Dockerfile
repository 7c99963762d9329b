# CDS Hooks imaging-appropriateness service.
#   docker build -t cds-imaging .
#   docker run --rm -p 8080:8080 -e CDS_FHIR_ALLOWED_HOSTS=fhir.example.org cds-imaging
# Several replicas on PostgreSQL behind a proxy: compose.yaml, deploy/k8s/ (README "Deploying").
# Needs network only for the Python package index during the build.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CDS_FEEDBACK_DB=/data/feedback.sqlite3 \
    CDS_CACHE_DIR=/data/cache

WORKDIR /src

# The package carries the built-in knowledge base (cards/) and the OpenAPI document as package data;
# a site's own knowledge base can still be mounted and named with CDS_CARDS_DIR.
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY docs/openapi.yaml ./docs/openapi.yaml
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 cds \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin cds \
    && mkdir -p /app /data && chown cds:cds /data

WORKDIR /app

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

# gunicorn sync workers with a request timeout and request-head limits: CDS_WORKERS,
# CDS_WORKER_TIMEOUT, CDS_GRACEFUL_TIMEOUT, CDS_LIMIT_REQUEST_* (README "Worker protection").
CMD ["cds-service", "serve", "--host", "0.0.0.0", "--port", "8080"]
