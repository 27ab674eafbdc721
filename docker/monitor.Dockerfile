# The drift monitor for docker compose: `python -m skindx.monitor` (Evidently) on a schedule
# (docker/monitor/run.sh), reading the API's prediction log and the served package's reference,
# writing the report that nginx serves under /monitoring/. Build context: the repository root,
# after the pipeline has promoted a model into serving/model/ (the reference travels with it).
#
# Why a service of its own, not the API: Evidently and its stack (pandas, scipy, plotly, ...) stay
# out of the serving image, which must stay small and fast, and one report is written per stack,
# not one per replica. Why not cron on the host: the stack then needs nothing outside compose.

# 1. the served package's card and reference, without its weights (the API image bakes the same
#    serving/model/)
FROM python:3.11-slim AS package
COPY serving/ /src/serving/
RUN cd /src/serving/model 2>/dev/null && test -f model.json && test -f reference.csv \
 || { echo "no promoted model with a reference in serving/model/: run make model" >&2; exit 1; }

# 2. the monitor
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv/src:/srv \
    MPLCONFIGDIR=/tmp \
    SKINDX_RUN_DIR=/var/lib/skindx \
    SKINDX_MONITOR_REPORTS_DIR=/var/lib/skindx-monitoring

# the API's user and group (uid 10001): the SQLite prediction log on the shared volume is theirs,
# and a new `monitoring` volume takes this directory's owner
RUN groupadd --system --gid 10001 skindx \
 && useradd --system --uid 10001 --gid skindx --home-dir /srv --shell /usr/sbin/nologin skindx \
 && install -d -o skindx -g skindx /var/lib/skindx /var/lib/skindx-monitoring

WORKDIR /srv
COPY requirements/monitor-image.txt /tmp/requirements-monitor.txt
RUN pip install --no-deps -r /tmp/requirements-monitor.txt && pip check 2>&1 | grep -v plotly || true

# the monitor and what it imports: the config, the torch-free core, the evaluation metrics, the
# prediction log's table definitions and the serving settings (the database URL)
COPY src/skindx/__init__.py src/skindx/config.py src/skindx/
COPY src/skindx/inference/ src/skindx/inference/
COPY src/skindx/evaluation/ src/skindx/evaluation/
COPY src/skindx/monitor/ src/skindx/monitor/
COPY serving/__init__.py serving/settings.py serving/
COPY serving/predlog/ serving/predlog/
COPY params.yaml /srv/params.yaml
COPY --from=package /src/serving/model/model.json /src/serving/model/reference.csv \
     /src/serving/model/predictions.csv /srv/model/
COPY docker/monitor/run.sh /usr/local/bin/skindx-monitor
RUN python -c "import skindx.monitor.report, skindx.monitor.window, skindx.monitor._evidently; import sys; assert 'torch' not in sys.modules" \
 && python -m skindx.monitor --help >/dev/null

USER skindx
# healthy while the loop lives: a run started or ended within the last interval (+10 min)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, time; s = os.stat('/tmp/skindx-monitor.last'); sys.exit(time.time() - s.st_mtime > int(os.environ.get('SKINDX_MONITOR_INTERVAL_S', '3600')) + 600)"]
ENTRYPOINT ["/usr/local/bin/skindx-monitor"]
