#!/bin/sh
# Prometheus container entry point (docker/prometheus.Dockerfile): copy the config and the alert
# rules to a tmpfs (the root filesystem is read-only), apply the optional overrides below, check
# the result with promtool (as nginx -t does for nginx), then run Prometheus in the foreground.
#
#   SKINDX_PROMETHEUS_INTERVAL   scrape and rule-evaluation interval (default: prometheus.yml's 15s)
#   SKINDX_PROMETHEUS_ALERT_FOR  replaces every alert's `for:` (default: alerts.yml's; tests: 0s)
#   SKINDX_PROMETHEUS_RETENTION  how long the TSDB keeps samples (default 15d)
set -eu

src=/etc/skindx/prometheus
conf=/tmp/prometheus
mkdir -p "$conf"
cp "$src/prometheus.yml" "$src/alerts.yml" "$conf/"

duration='^[0-9]+(ms|s|m|h|d|w|y)$'
for name in SKINDX_PROMETHEUS_INTERVAL SKINDX_PROMETHEUS_ALERT_FOR; do
  value=$(printenv "$name" || true)
  if [ -n "$value" ] && ! printf '%s' "$value" | grep -Eq "$duration"; then
    echo "$name=$value is not a Prometheus duration (e.g. 15s, 1m)" >&2
    exit 2
  fi
done
if [ -n "${SKINDX_PROMETHEUS_INTERVAL:-}" ]; then
  sed -Ei "s/^(  (scrape|evaluation)_interval:).*/\1 $SKINDX_PROMETHEUS_INTERVAL/" "$conf/prometheus.yml"
fi
if [ -n "${SKINDX_PROMETHEUS_ALERT_FOR:-}" ]; then
  sed -Ei "s/^( +for:).*/\1 $SKINDX_PROMETHEUS_ALERT_FOR/" "$conf/alerts.yml"
fi

promtool check config "$conf/prometheus.yml" >/dev/null

exec prometheus \
  --config.file="$conf/prometheus.yml" \
  --storage.tsdb.path=/var/lib/prometheus/metrics2 \
  --storage.tsdb.retention.time="${SKINDX_PROMETHEUS_RETENTION:-15d}" \
  --web.listen-address=0.0.0.0:9090 \
  --web.external-url=/prometheus/ \
  --web.console.templates=/etc/prometheus/consoles \
  --web.console.libraries=/etc/prometheus/console_libraries \
  "$@"
