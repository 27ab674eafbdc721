"""Serving benchmark: this API (ONNX Runtime, micro-batching) against a reference-style server
(bench/reference_server.py: FastAPI whose `async def` endpoint runs a torch eager model
synchronously, one image at a time), both on loopback and on the same promoted model, with
real full-resolution images.

    python bench/serving.py                       # serving/model, writes bench/results/serving.json
    python bench/serving.py --model-dir models/candidate --requests 400

Measures p50/p95/p99 latency with one client, then throughput and p99 with 16 concurrent
clients over a fixed number of requests; prints the ratios against the targets
(p50 >= 2x faster, throughput >= 3x, zero errors). Only the baseline imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "ham10000-fullres-sample" / "images"
TARGETS = {"p50_speedup_1_client": 2.0, "throughput_ratio_16_clients": 3.0, "errors": 0}


# --- running both servers ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int, env: dict[str, str], name: str):
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} server exited: {process.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} server not ready after 180 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- load generation -----------------------------------------------------------------------
async def run_load(url: str, images: list[bytes], clients: int, requests: int) -> dict:
    """`requests` POST /predict split over `clients` concurrent clients (one connection each)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for index in counter:
                files = {"file": ("lesion.jpg", images[index % len(images)], "image/jpeg")}
                started = time.perf_counter()
                try:
                    response = await http.post("/predict", files=files)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": requests,
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def measure(url: str, images: list[bytes], args) -> dict:
    asyncio.run(run_load(url, images, 1, args.warmup))
    return {
        "one_client": asyncio.run(run_load(url, images, 1, args.requests_single)),
        f"{args.concurrency}_clients": asyncio.run(
            run_load(url, images, args.concurrency, args.requests)
        ),
    }


def agreement(api: str, baseline: str, images: list[bytes]) -> float:
    """Largest probability difference between the two servers on a few images (same model?)."""
    worst = 0.0
    for data in images[:5]:
        files = {"file": ("lesion.jpg", data, "image/jpeg")}
        ours = [
            p["probability"]
            for p in httpx.post(f"{api}/predict", files=files).json()["probabilities"]
        ]
        theirs = httpx.post(f"{baseline}/predict", files=files).json()["probabilities"]
        worst = max(worst, float(np.abs(np.subtract(ours, theirs)).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "serving" / "model")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--requests", type=int, default=192, help="requests at N clients")
    parser.add_argument("--requests-single", type=int, default=60, help="requests at 1 client")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()

    if not (model_dir / "model.json").is_file():
        raise SystemExit(f"no packaged model in {model_dir}: run `make repro` or pass --model-dir")
    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    if not images:
        raise SystemExit(f"no .jpg images in {args.images}")
    card = json.loads((model_dir / "model.json").read_text())

    env = dict(os.environ, SKINDX_MODEL_DIR=str(model_dir), SKINDX_LOG_LEVEL="warning")
    api_port, baseline_port = free_port(), free_port()
    api_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(api_port),
        "--log-level",
        "warning",
    ]
    baseline_cmd = [
        sys.executable,
        str(Path(__file__).with_name("reference_server.py")),
        "--model-dir",
        str(model_dir),
        "--port",
        str(baseline_port),
    ]
    results: dict = {}
    # both run (the same model, checked below); only the one being measured gets load
    with (
        server(api_cmd, api_port, env, "API") as api,
        server(baseline_cmd, baseline_port, env, "baseline") as baseline,
    ):
        max_difference = agreement(api, baseline, images)
        for name, url in (("api", api), ("baseline", baseline)):
            print(f"measuring {name} ...", flush=True)
            results[name] = measure(url, images, args)

    single, many = "one_client", f"{args.concurrency}_clients"
    api, base = results["api"], results["baseline"]
    ratios = {
        "p50_speedup_1_client": round(base[single]["p50_ms"] / api[single]["p50_ms"], 2),
        "p99_speedup_1_client": round(base[single]["p99_ms"] / api[single]["p99_ms"], 2),
        f"throughput_ratio_{args.concurrency}_clients": round(
            api[many]["throughput_rps"] / base[many]["throughput_rps"], 2
        ),
        f"p99_speedup_{args.concurrency}_clients": round(
            base[many]["p99_ms"] / api[many]["p99_ms"], 2
        ),
    }
    errors = sum(r[k]["errors"] for r in results.values() for k in (single, many))
    met = {
        "p50_speedup_1_client": ratios["p50_speedup_1_client"] >= TARGETS["p50_speedup_1_client"],
        "throughput_ratio_16_clients": ratios.get(f"throughput_ratio_{args.concurrency}_clients", 0)
        >= TARGETS["throughput_ratio_16_clients"],
        "errors": errors == 0,
    }
    report = {
        "benchmark": "serving",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": {
            "dir": str(model_dir),
            "version": card.get("version"),
            "arch": card.get("architecture", {}).get("arch"),
            "input_size": card["preprocessing"]["input_size"],
        },
        "images": {
            "dir": str(args.images),
            "count": len(images),
            "mean_bytes": int(statistics.mean(len(i) for i in images)),
        },
        "max_probability_difference_api_vs_baseline": round(max_difference, 6),
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\nmodel {report['model']['arch']} @ {report['model']['input_size']} px, "
        f"{len(images)} full-res images, {os.cpu_count()} CPUs; "
        f"max |p_api - p_baseline| = {max_difference:.2e}"
    )
    print(
        f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} | {args.concurrency} clients: "
        f"{'req/s':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for name in ("api", "baseline"):
        one, conc = results[name][single], results[name][many]
        print(
            f"{name:10} {one['p50_ms']:8.1f} {one['p95_ms']:8.1f} {one['p99_ms']:8.1f} | "
            f"{'':11}{conc['throughput_rps']:8.1f} {conc['p99_ms']:8.1f} "
            f"{one['errors'] + conc['errors']:6d}"
        )
    for key, value in ratios.items():
        print(f"{key}: {value}x")
    print(
        f"targets met: {met}  -> {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
    )


if __name__ == "__main__":
    main()
