# The training environment for `docker compose --profile train run --rm trainer` (dvc repro).
# Build context: the repository root. The project itself is bind-mounted at /workspace, so the
# pipeline's outputs (serving/model/ included) land in the host's checkout.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

COPY requirements/train.txt /tmp/requirements-train.txt
RUN pip install -r /tmp/requirements-train.txt torch==2.14.1 torchvision==0.29.1

RUN groupadd --gid 1000 trainer \
 && useradd --uid 1000 --gid trainer --create-home --shell /usr/sbin/nologin trainer
USER trainer
WORKDIR /workspace

# the bind-mounted checkout is the package source; git must trust it for lineage tags
ENV PYTHONPATH=/workspace/src \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK=true \
    GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=/workspace
CMD ["dvc", "repro"]
