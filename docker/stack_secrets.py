"""Write the compose stack's secrets into .secrets/ (git-ignored, never in an image), once.

    python3 docker/stack_secrets.py [--dir .secrets] [--rotate NAME ...]

`make up` (and `make secrets`) run it. Each service gets a file with only what it needs, read by
docker compose (`env_file:`):

    .secrets/postgres.env   the passwords of the `mlflow` and `predlog` database roles
    .secrets/mlflow.env     its database password, the MLflow admin's password, the CSRF key
    .secrets/trainer.env    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the pipeline's login)
    .secrets/api.env        SKINDX_PREDICTION_DB, the prediction log's PostgreSQL URL

Values already there are kept, so the volumes' databases go on accepting them; missing ones are
generated (`secrets.token_urlsafe`). The directory is mode 700, the files 600, written
atomically. `--rotate pg_predlog` (a NAME from SECRETS) makes a new value: the postgres service
applies new role passwords on its next start; the MLflow admin password only bootstraps an empty
user store (change it later through MLflow's auth API, README "MLflow: users and permissions").
Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".secrets"

# name -> (service file, variable); a name may appear in several files
SECRETS = {
    "pg_mlflow": [
        ("postgres", "SKINDX_PG_MLFLOW_PASSWORD"),
        ("mlflow", "SKINDX_PG_MLFLOW_PASSWORD"),
    ],
    "pg_predlog": [("postgres", "SKINDX_PG_PREDLOG_PASSWORD")],
    "mlflow_admin": [
        ("mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD"),
        ("trainer", "MLFLOW_TRACKING_PASSWORD"),
    ],
    "flask_key": [("mlflow", "MLFLOW_FLASK_SERVER_SECRET_KEY")],
}
MLFLOW_ADMIN = "admin"
PREDLOG_URL = "postgresql://predlog:{pg_predlog}@postgres:5432/predlog"
HEADER = (
    "# written by docker/stack_secrets.py (make secrets): git-ignored, never commit or copy it\n"
)


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def current_values(directory: Path) -> dict[str, str]:
    """The secrets as the files hold them now (a name is found in the first file that has it)."""
    found: dict[str, str] = {}
    for name, places in SECRETS.items():
        for service, variable in places:
            value = read_env(directory / f"{service}.env").get(variable)
            if value:
                found[name] = value
                break
    return found


def service_files(values: dict[str, str]) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {"postgres": {}, "mlflow": {}, "trainer": {}, "api": {}}
    for name, places in SECRETS.items():
        for service, variable in places:
            files[service][variable] = values[name]
    files["mlflow"]["MLFLOW_AUTH_ADMIN_USERNAME"] = MLFLOW_ADMIN
    files["trainer"]["MLFLOW_TRACKING_USERNAME"] = MLFLOW_ADMIN
    files["api"]["SKINDX_PREDICTION_DB"] = PREDLOG_URL.format(**values)
    return files


def write_private(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_secrets(directory: Path = DEFAULT_DIR, rotate: tuple[str, ...] = ()) -> list[str]:
    """Create what is missing (and what `rotate` names); returns the names generated."""
    unknown = sorted(set(rotate) - set(SECRETS))
    if unknown:
        raise SystemExit(
            f"unknown secret(s) {', '.join(unknown)}: choose from {', '.join(SECRETS)}"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    values = current_values(directory)
    made = [name for name in SECRETS if name not in values or name in rotate]
    for name in made:
        values[name] = secrets.token_urlsafe(32)  # URL- and env-file-safe: [A-Za-z0-9_-]
    for service, variables in service_files(values).items():
        path = directory / f"{service}.env"
        text = HEADER + "".join(f"{k}={v}\n" for k, v in variables.items())
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_private(path, text)
        os.chmod(path, 0o600)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: .secrets/")
    parser.add_argument("--rotate", nargs="*", default=[], metavar="NAME", help=", ".join(SECRETS))
    args = parser.parse_args(argv)
    made = ensure_secrets(args.dir, tuple(args.rotate))
    where = args.dir
    if made:
        print(f"secrets: generated {', '.join(made)} in {where}/ (mode 600, git-ignored)")
    else:
        print(f"secrets: {where}/ holds every secret the stack needs")
    if "mlflow_admin" in made:
        print(
            f"secrets: the MLflow login (/mlflow/) is user {MLFLOW_ADMIN}, password "
            f"MLFLOW_TRACKING_PASSWORD in {where}/trainer.env"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
