"""Wait until every container of the compose project reports healthy, then print the URL.

    python3 deploy/compose_wait.py [--compose "docker compose"] [--timeout 300]

`make up` runs it after `up -d`. A service that turns unhealthy or exits stops the wait at once
with its last log lines and the command to see the rest. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env_file_values(path: Path = ROOT / ".env") -> dict[str, str]:
    """KEY=VALUE lines of .env (the subset of the format compose and python-dotenv share)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def entry_url(environ: dict[str, str] | None = None) -> str:
    env = {**env_file_values(), **(os.environ if environ is None else environ)}
    host = env.get("SKINDX_BIND", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{env.get('SKINDX_HTTP_PORT', '8080')}/"


def container_states(
    compose: list[str], env: dict[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """name -> (state, health) for every container of the project (health '' without a check)."""
    ids = subprocess.run(
        [*compose, "ps", "-q"], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    ).stdout.split()
    if not ids:
        return {}
    out = subprocess.run(
        ["docker", "inspect", *ids], capture_output=True, text=True, check=True
    ).stdout
    states = {}
    for c in json.loads(out):
        health = (c["State"].get("Health") or {}).get("Status", "")
        states[c["Name"].lstrip("/")] = (c["State"]["Status"], health)
    return states


def wait_healthy(
    compose: list[str],
    timeout: float = 300.0,
    interval: float = 2.0,
    env: dict[str, str] | None = None,
) -> None:
    """Return once every container runs and each with a healthcheck is healthy; raise
    RuntimeError naming the culprit (with its log tail) otherwise."""
    deadline = time.monotonic() + timeout
    states: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline:
        states = container_states(compose, env)
        bad = {n: s for n, s in states.items() if s[0] in ("exited", "dead") or s[1] == "unhealthy"}
        if bad:
            name = sorted(bad)[0]
            logs = subprocess.run(
                ["docker", "logs", "--tail", "30", name], capture_output=True, text=True
            )
            raise RuntimeError(
                f"{name} is {'/'.join(filter(None, bad[name]))}:\n{logs.stdout}{logs.stderr}"
                f"(all of it: docker logs {name})"
            )
        if states and all(
            s == ("running", "healthy") or s == ("running", "") for s in states.values()
        ):
            return
        time.sleep(interval)
    waiting = ", ".join(f"{n} ({'/'.join(filter(None, s))})" for n, s in sorted(states.items()))
    raise RuntimeError(f"not healthy after {timeout:.0f} s: {waiting or 'no containers'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", default="docker compose", help="the compose command")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        wait_healthy(shlex.split(args.compose), args.timeout)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"SkinDX is up at {entry_url()}  (healthy after {took:.0f} s; `make down` stops it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
