# MLflow tracking server + UI for docker compose, served under /mlflow (nginx routes /mlflow/ here).
# Build context: the repository root, of which .dockerignore (or, with BuildKit,
# mlflow.Dockerfile.dockerignore) sends only requirements/mlflow.txt and docker/mlflow/.
#
# The backend store and the auth database are on the compose `postgres` service; the artifacts
# are on the `mlflow-artifacts` volume, served by this server (clients get mlflow-artifacts:/
# URIs and upload and download over HTTP). Login: MLflow's basic-auth app, admin password and
# database password from the environment (docker/mlflow/entrypoint.sh says which variables).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/mlflow.txt /tmp/requirements-mlflow.txt
RUN pip install -r /tmp/requirements-mlflow.txt

RUN groupadd --system --gid 10002 mlflow \
 && useradd --system --uid 10002 --gid mlflow --home-dir /mlflow --shell /usr/sbin/nologin mlflow \
 && mkdir -p /mlflow/artifacts \
 && chown -R mlflow:mlflow /mlflow
COPY docker/mlflow/entrypoint.sh /usr/local/bin/skindx-mlflow
USER mlflow
WORKDIR /mlflow

EXPOSE 5000
# /mlflow/health is one of the auth app's unprotected routes: no credentials in the healthcheck
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/mlflow/health', timeout=4)"]
ENTRYPOINT ["sh", "/usr/local/bin/skindx-mlflow"]
# uvicorn's supervisor kills a worker that does not answer its ping within 5 s by default: on a
# loaded machine (the trainer importing torch next to it) that killed a worker mid-request (502
# through nginx); 60 s still replaces a truly hung worker
CMD ["--serve-artifacts", "--artifacts-destination", "/mlflow/artifacts", \
     "--host", "0.0.0.0", "--port", "5000", \
     "--static-prefix", "/mlflow", "--workers", "2", \
     "--uvicorn-opts", "--timeout-worker-healthcheck 60"]
