# PostgreSQL for the compose stack: MLflow's backend store and auth database, and the API's
# prediction log, one database and one login role each. Debian's own postgresql (15 on bookworm),
# since no image can be pulled here. Build context: docker/postgres/.
#
# The cluster lives on the `postgres-data` volume (PGDATA). The entry point creates it on the first
# start, then on every start makes sure each role and database named in the environment exists
# and has the password given there (the secrets come from .secrets/postgres.env, written by
# `make secrets`; nothing secret is in the image or the repository). It runs as the image's
# `postgres` user and needs no capability: it owns PGDATA (the image creates the directory owned by
# postgres, and Docker copies that ownership onto a new named volume), so it never chowns.
FROM debian:bookworm-slim

# Debian's postinst would create a `main` cluster in the image: the volume gets the only one
ENV PG_MAJOR=15 LANG=C.UTF-8
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-$PG_MAJOR" \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data

ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$PATH PGDATA=/var/lib/postgresql/data PGHOST=/tmp
# (mode 755 from the checkout: the legacy builder of docker-compose v1 has no COPY --chmod)
COPY entrypoint.sh /usr/local/bin/skindx-postgres
USER postgres
WORKDIR /var/lib/postgresql
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=5 \
  CMD ["pg_isready", "-q", "-h", "/tmp", "-U", "postgres"]
ENTRYPOINT ["sh", "/usr/local/bin/skindx-postgres"]
