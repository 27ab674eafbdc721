"""A fresh clone with a shared DVC remote: pulling the team's outputs vs retraining them.
Writes bench/results/dvc_remote.json.

retrain : clone A (a fresh project copy with the data) runs the whole pipeline, `dvc repro`:
          what every clone does without a remote.
pull    : clone B (`git clone` of A after A committed dvc.lock and pushed with
          `dvc push --run-cache` to a local-directory remote) runs what `make run` runs before
          serving: `dvc pull --run-cache`, then `dvc repro` (which finds nothing to do).

Both are timed in the same run on the same machine; the push in between is timed too. The
remote is a local directory, so the pull time is a floor for an NFS/SSH/S3 remote (add the
transfer of `remote_mb` over the network).

    python bench/bench_remote.py                     # quick profile (real images, 10 lesions/class)
    python bench/bench_remote.py --profile demo      # the demo profile on the full dataset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import (  # noqa: E402 - the tests' project-copy helpers, not a second copy
    SHARED_DATA,
    make_project_copy,
    make_subset,
    project_env,
    run_dvc,
)

RESULT = REPO / "bench" / "results" / "dvc_remote.json"


def timed(project: Path, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    result = run_dvc(project, *args, env=env, timeout=6 * 3600)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"dvc {' '.join(args)} failed in {project}:\n{result.stdout}\n{result.stderr}")
    return elapsed


def tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick", choices=["quick", "demo", "full"])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    with tempfile.TemporaryDirectory(prefix="skindx-bench-remote-") as tmp:
        tmp = Path(tmp)
        source = SHARED_DATA / "ham10000"
        if args.profile == "quick":  # the tests' quick pipeline: ten lesions per class
            source = make_subset(source, tmp / "source", per_class=10)
        a = make_project_copy(tmp / "a", (f"experiment={args.profile}",))
        env_a = project_env(a, source)
        print(f"retrain: dvc repro in a fresh copy ({args.profile} profile) ...", flush=True)
        retrain_s = timed(a, env_a, "repro")
        subprocess.run([*git, "add", "dvc.lock"], cwd=a, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "outputs"], cwd=a, check=True)
        remote = tmp / "remote"
        run_dvc(a, "remote", "add", "--local", "-d", "bench", str(remote), env=env_a)
        push_s = timed(a, env_a, "push", "--run-cache")

        b = tmp / "b"
        subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
        env_b = project_env(b)  # no data source: B cannot train
        run_dvc(b, "remote", "add", "--local", "-d", "bench", str(remote), env=env_b)
        print("pull: dvc pull --run-cache && dvc repro in a fresh clone ...", flush=True)
        pull_s = timed(b, env_b, "pull", "--run-cache")
        repro_s = timed(b, env_b, "repro")
        status = run_dvc(b, "status", env=env_b).stdout.strip()
        same = (b / "serving/model/model.json").read_bytes() == (
            a / "serving/model/model.json"
        ).read_bytes()
        result = {
            "benchmark": "fresh clone: pull from a DVC remote vs retrain",
            "command": f"python bench/bench_remote.py --profile {args.profile}",
            "profile": args.profile,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "remote": "local directory",
            "remote_mb": round(tree_mb(remote), 1),
            "retrain_s": round(retrain_s, 1),
            "push_s": round(push_s, 1),
            "pull_s": round(pull_s, 1),
            "repro_after_pull_s": round(repro_s, 1),
            "pull_path_s": round(pull_s + repro_s, 1),
            "speedup": round(retrain_s / (pull_s + repro_s), 1),
            "clone_b_status": status,
            "same_model_card": same,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
