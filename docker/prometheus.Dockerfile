# Prometheus for docker compose: Debian's `prometheus` package (2.42) on debian:bookworm-slim, as
# an unprivileged user, scraping every API replica through Docker's DNS (prometheus/prometheus.yml)
# and evaluating prometheus/alerts.yml. nginx routes /prometheus/ here for operators (basic auth);
# the service publishes no port. Build context: prometheus/.
FROM debian:bookworm-slim

# policy-rc.d: the package must not try to start its own daemon during the build; its postinst
# creates the `prometheus` system user, renumbered here to a fixed uid for the TSDB volume
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && groupmod --gid 10004 prometheus \
 && usermod --uid 10004 --gid 10004 prometheus \
 && install -d -o prometheus -g prometheus /var/lib/prometheus/metrics2 \
 && chown -R prometheus:prometheus /var/lib/prometheus \
 && prometheus --version

COPY prometheus.yml alerts.yml /etc/skindx/prometheus/
COPY entrypoint.sh /usr/local/bin/skindx-prometheus
# the rules as shipped, checked at build time too
RUN promtool check config /etc/skindx/prometheus/prometheus.yml

USER prometheus
EXPOSE 9090
VOLUME ["/var/lib/prometheus"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /prometheus/-/ready HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.0 200' <&3"]
ENTRYPOINT ["/usr/local/bin/skindx-prometheus"]
