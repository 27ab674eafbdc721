#!/bin/sh
# Entry point of the mlflow image (docker/mlflow.Dockerfile): MLflow's tracking server with its
# basic-auth app, the backend store and the auth database both on PostgreSQL, the artifacts
# served by the server itself from /mlflow/artifacts (clients get mlflow-artifacts:/ URIs and
# need no filesystem). Everything secret comes from the environment (compose: .secrets/mlflow.env,
# written by `make secrets`), never from the image or the repository:
#
#   SKINDX_PG_MLFLOW_PASSWORD        the `mlflow` PostgreSQL role's password
#   MLFLOW_AUTH_ADMIN_PASSWORD       the MLflow admin user's password (created on the first start;
#   MLFLOW_AUTH_ADMIN_USERNAME       default admin; later starts keep the stored one)
#   MLFLOW_FLASK_SERVER_SECRET_KEY   the CSRF key, the same for every worker
#
# SKINDX_PG_HOST / SKINDX_PG_PORT / SKINDX_PG_MLFLOW_USER / SKINDX_PG_MLFLOW_DB /
# SKINDX_PG_MLFLOW_AUTH_DB locate the databases (defaults: the compose `postgres` service, role
# `mlflow`, databases `mlflow` for the runs and registry and `mlflow_auth` for the users). The
# store URIs travel in the environment and a mode-600 file on the tmpfs, never on a command line
# (`ps` would show them).
set -eu

missing=""
for name in SKINDX_PG_MLFLOW_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  [ -n "$(printenv "$name" || true)" ] || missing="$missing $name"
done
if [ -n "$missing" ]; then
  echo "mlflow: no value for$missing: run \`make secrets\` (writes .secrets/*.env, read by compose)" >&2
  exit 2
fi

# postgresql+psycopg2://user:password@host:port/<database>, the parts URL-quoted (SQLAlchemy 2.1
# reads a bare postgresql:// as psycopg 3; this image has psycopg2, requirements/mlflow.txt)
pg_uri() {
  python - "$1" <<'PY'
import os
import sys
from urllib.parse import quote

e = os.environ.get
print(
    f"postgresql+psycopg2://{quote(e('SKINDX_PG_MLFLOW_USER', 'mlflow'), safe='')}:"
    f"{quote(e('SKINDX_PG_MLFLOW_PASSWORD'), safe='')}@{e('SKINDX_PG_HOST', 'postgres')}:"
    f"{e('SKINDX_PG_PORT', '5432')}/{quote(sys.argv[1], safe='')}"
)
PY
}
MLFLOW_BACKEND_STORE_URI=$(pg_uri "${SKINDX_PG_MLFLOW_DB:-mlflow}")
export MLFLOW_BACKEND_STORE_URI
auth_store=$(pg_uri "${SKINDX_PG_MLFLOW_AUTH_DB:-mlflow_auth}")

# the auth app reads its settings from an ini file only (MLFLOW_AUTH_CONFIG_PATH): write it to the
# tmpfs. default_permission EDIT: every signed-in team member may log runs and register and promote
# versions in any experiment; README ("MLflow: users and permissions") says how to narrow it.
umask 077
mkdir -p /tmp/mlflow-auth
config=/tmp/mlflow-auth/basic_auth.ini
{
  echo "[mlflow]"
  echo "default_permission = ${SKINDX_MLFLOW_DEFAULT_PERMISSION:-EDIT}"
  # configparser interpolation: a literal % in the URI must be written %%
  printf 'database_uri = %s\n' "$(printf '%s' "$auth_store" | sed 's/%/%%/g')"
  echo "admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
  echo "authorization_function = mlflow.server.auth:authenticate_request_basic_auth"
} > "$config"
export MLFLOW_AUTH_CONFIG_PATH="$config"
export MLFLOW_AUTH_ADMIN_USERNAME="${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"

exec mlflow server --app-name basic-auth "$@"
