# The pipeline's environment for `docker compose --profile train run --rm trainer` (dvc repro
# against the mlflow service). Build context: requirements/ (only the pinned sets). The checkout
# is bind-mounted at /workspace, so the outputs (serving/model/ included) land in the host's
# checkout, owned by SKINDX_UID:SKINDX_GID. Nothing of the test tooling is installed.
#
# torch: TORCH_VARIANT=cuda (default) installs PyPI's CUDA build pinned in torch.txt (GPU-ready,
# ~4 GB of NVIDIA libraries); TORCH_VARIANT=cpu installs PyTorch's CPU wheels from
# TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu), a much smaller image.
# TORCH_INDEX_URL may also point a cuda build at a mirror that holds torch.txt's wheels.
FROM python:3.11-slim

ARG TORCH_VARIANT=cuda
ARG TORCH_INDEX_URL=
ARG PYPI_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# git: DVC and the lineage tags; tini: PID 1 that forwards SIGTERM to the whole process group
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini \
 && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: the largest and the least often changed
COPY torch.txt /tmp/requirements/torch.txt
RUN set -e; \
    case "$TORCH_VARIANT" in \
      cpu)  pip install --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" \
              --extra-index-url "$PYPI_INDEX_URL" \
              $(grep -E '^(torch|torchvision)==' /tmp/requirements/torch.txt) ;; \
      cuda) if [ -n "$TORCH_INDEX_URL" ]; then \
              pip install --index-url "$TORCH_INDEX_URL" --extra-index-url "$PYPI_INDEX_URL" \
                -r /tmp/requirements/torch.txt; \
            else pip install -r /tmp/requirements/torch.txt; fi ;; \
      *) echo "TORCH_VARIANT must be cuda or cpu, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac
COPY pipeline.txt /tmp/requirements/pipeline.txt
RUN pip install -r /tmp/requirements/pipeline.txt

# SIGTERM (docker stop, Ctrl-C of `compose run`): tini (PID 1, -g) forwards it to the whole
# process group: dvc, the stage's /bin/sh and the stage's Python. At their defaults dvc and the
# shell die at once, tini exits with them and the teardown kills the stage before it ends its
# MLflow run (RUNNING forever). So, in a module every Python process imports (a .pth line, not
# sitecustomize.py, which a distribution's own sitecustomize would shadow; sys.argv is set by
# then):
# - dvc ignores SIGTERM, and so does the stage's shell, which inherits the ignored disposition
#   (dash does not exec the stage's command); dvc waits for the stage and exits when it does;
# - every other Python process turns SIGTERM into SystemExit, so `with mlflow.start_run()` ends
#   the run (FAILED) and finally blocks run. That includes the stage under an ignoring dvc, marked
#   by an environment variable (an exec keeps an ignored signal ignored).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && printf '%s\n' \
    '"""SkinDX trainer image: SIGTERM ends the pipeline cleanly (see trainer.Dockerfile)."""' \
    'import os' \
    'import signal' \
    'import sys' \
    '' \
    '_MARK = "SKINDX_SIGTERM_IGNORED_BY_DVC"' \
    '' \
    '' \
    'def _exit(signum, frame):' \
    '    raise SystemExit(128 + signum)' \
    '' \
    '' \
    '_current = signal.getsignal(signal.SIGTERM)' \
    'if os.path.basename(sys.argv[0] if sys.argv else "") == "dvc":' \
    '    if _current in (signal.SIG_DFL, signal.SIG_IGN):' \
    '        signal.signal(signal.SIGTERM, signal.SIG_IGN)' \
    '        os.environ[_MARK] = "1"' \
    'elif _current is signal.SIG_DFL or (' \
    '    _current is signal.SIG_IGN and os.environ.pop(_MARK, None) == "1"' \
    '):' \
    '    signal.signal(signal.SIGTERM, _exit)' \
    > "$site/skindx_sigterm.py" \
 && python -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$site/skindx_sigterm.py" \
 && echo 'import skindx_sigterm' > "$site/skindx-sigterm.pth"

# the default user; compose runs it as SKINDX_UID:SKINDX_GID, the owner of the checkout
RUN groupadd --gid 1000 trainer \
 && useradd --uid 1000 --gid trainer --create-home --shell /usr/sbin/nologin trainer
USER trainer
WORKDIR /workspace

# the bind-mounted checkout is the package source; git must trust it for lineage tags
ENV PYTHONPATH=/workspace/src \
    HOME=/tmp \
    USER=trainer \
    LOGNAME=trainer \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK=true \
    GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*
ENTRYPOINT ["tini", "-g", "--"]
CMD ["dvc", "repro"]
