#!/bin/sh
# The monitor service's loop (docker/monitor.Dockerfile): `python -m skindx.monitor` every
# SKINDX_MONITOR_INTERVAL_S seconds (3600) over the last monitor.days of the prediction log,
# writing report.html and summary.json into SKINDX_MONITOR_REPORTS_DIR (the `monitoring` volume,
# which nginx serves under /monitoring/ and each API replica reads for skindx_drift_score).
# A run that cannot work (exit 2: e.g. the API has not created the log's tables yet) is retried
# after SKINDX_MONITOR_RETRY_S (60). Exit 1 (a drift alarm) is a result, not a failure: the
# alarm reaches operators as the SkindxDriftScoreHigh alert. Each attempt touches a heartbeat
# file (when it starts and when it ends) that the healthcheck reads: a run that hangs past the
# interval turns the service unhealthy.
set -u
interval=${SKINDX_MONITOR_INTERVAL_S:-3600}
retry=${SKINDX_MONITOR_RETRY_S:-60}
reports=${SKINDX_MONITOR_REPORTS_DIR:?set SKINDX_MONITOR_REPORTS_DIR}
case "$interval$retry" in
  *[!0-9]*|"") echo "SKINDX_MONITOR_INTERVAL_S and SKINDX_MONITOR_RETRY_S must be whole seconds" >&2; exit 2 ;;
esac
heartbeat=/tmp/skindx-monitor.last
trap 'exit 0' TERM INT

while :; do
  echo "running $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$heartbeat"
  python -m skindx.monitor --reports-dir "$reports" --model-dir /srv/model --params /srv/params.yaml
  rc=$?
  # exit 1 is an alarm only with the summary it wrote; a crash (a Python traceback) exits 1 too
  if [ "$rc" -eq 1 ] && ! [ "$reports/summary.json" -nt "$heartbeat" ]; then rc=3; fi
  echo "$rc $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$heartbeat"
  if [ "$rc" -ge 2 ]; then wait_s=$retry; else wait_s=$interval; fi
  echo "monitor: next run in ${wait_s}s"
  sleep "$wait_s" &
  wait $!
done
