#!/bin/sh
# Entry point of the postgres image (docker/postgres.Dockerfile).
#
#   SKINDX_PG_DATABASES="mlflow:SKINDX_PG_MLFLOW_PASSWORD predlog:SKINDX_PG_PREDLOG_PASSWORD"
#   SKINDX_PG_EXTRA_DATABASES="mlflow_auth:mlflow"
#
# Each `name:VARIABLE` pair is a login role and a database of that name, owned by it, with the
# password held in the environment variable VARIABLE; each `database:role` pair of the extra list
# one more database owned by that role (MLflow's auth app keeps its users apart from the runs). The first start creates the cluster on
# PGDATA (local socket: peer, the postgres OS user only; TCP: scram-sha-256 passwords only); every
# start then creates what is missing and sets each role's password to the current value, so a
# rotated secret (make secrets ROTATE=1) takes effect on the next start. No superuser password:
# the superuser logs in over the socket inside the container only.
set -eu

: "${PGDATA:?}"
: "${SKINDX_PG_DATABASES:?set SKINDX_PG_DATABASES (name:PASSWORD_VARIABLE pairs; docker-compose.yml has them)}"
socket=${PGHOST:-/tmp}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres: initialising a new cluster in $PGDATA"
  initdb --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  {
    echo "# written by skindx-postgres: socket for the postgres OS user, TCP with a password"
    echo "local all postgres peer"
    echo "host  all all 0.0.0.0/0 scram-sha-256"
    echo "host  all all ::/0      scram-sha-256"
  } > "$PGDATA/pg_hba.conf"
fi

# the roles and databases, with the server listening on the socket only
pg_ctl -D "$PGDATA" -w -t 120 -o "-c listen_addresses='' -c unix_socket_directories=$socket" \
  start >/dev/null
for pair in $SKINDX_PG_DATABASES; do
  name=${pair%%:*}
  variable=${pair#*:}
  password=$(printenv "$variable" || true)
  if [ -z "$password" ]; then
    echo "postgres: $variable is empty: run \`make secrets\` (it writes .secrets/postgres.env)" >&2
    pg_ctl -D "$PGDATA" -m fast stop >/dev/null
    exit 2
  fi
  # psql reads the password from its environment (\getenv) and quotes it (:'password'): it
  # never reaches a command line (ps) or the server log
  SKINDX_PG_ROLE_PASSWORD=$password psql -v ON_ERROR_STOP=1 -q -X -h "$socket" -U postgres \
    -d postgres -v name="$name" <<'SQL'
\getenv password SKINDX_PG_ROLE_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SET log_statement = 'none';
ALTER ROLE :"name" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  echo "postgres: role and database '$name' ready"
done
for pair in ${SKINDX_PG_EXTRA_DATABASES:-}; do
  psql -v ON_ERROR_STOP=1 -q -X -h "$socket" -U postgres -d postgres \
    -v name="${pair%%:*}" -v owner="${pair#*:}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  echo "postgres: database '${pair%%:*}' (owner ${pair#*:}) ready"
done
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$socket" \
  -c password_encryption=scram-sha-256 "$@"
