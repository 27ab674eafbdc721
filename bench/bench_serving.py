"""Serving benchmark: this API (ONNX Runtime, micro-batching) against a reference-style server
(bench/reference_server.py: FastAPI whose `async def` endpoint runs a torch eager model
synchronously, one image at a time), both on loopback and on the same promoted model, with
real full-resolution images.

    python bench/bench_serving.py                   # serving/model, writes bench/results/serving.json
    python bench/bench_serving.py --model-dir models/candidate --rounds 5
    python bench/bench_serving.py --client httpx    # the same with a heavier Python client

Measures p50/p95/p99 latency with one client, then throughput and p99 with 16 concurrent
clients over a fixed number of requests, in interleaved rounds (API, baseline, baseline, API,
...) because a shared 2-core VM changes speed over a minute; reports medians, each round's
paired ratio and the worst one, against the targets (p50 >= 2x faster, throughput >= 3x, zero
errors). The load comes from bench/loadgen.py, which leaves the CPUs to the servers. Only the
baseline imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import numpy as np
from loadgen import LoadResult, run_load  # a sibling module: run this file as a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repo's deploy package
from deploy.stack import free_port  # noqa: E402  (one definition, shared with the tests)

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "ham10000-fullres-sample" / "images"
TARGETS = {"p50_speedup_1_client": 2.0, "throughput_ratio_16_clients": 3.0, "errors": 0}


# --- running both servers ------------------------------------------------------------------
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
async def run_httpx_load(url: str, images: list[bytes], clients: int, requests: int) -> LoadResult:
    """The same load through httpx (one AsyncClient per client): a typical Python client, kept
    to show how much of the two cores a heavier client takes from the servers."""
    result = LoadResult(clients, requests, 0.0)
    counter = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for index in counter:
                files = {"file": ("lesion.jpg", images[index % len(images)], "image/jpeg")}
                started = time.perf_counter()
                try:
                    response = await http.post("/predict", files=files)
                except httpx.HTTPError as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.latencies_s.append(time.perf_counter() - started)
                if response.status_code != 200:
                    result.errors.append(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


def load(url: str, images: list[bytes], clients: int, requests: int, client_kind: str) -> dict:
    """One load phase; also reports the client's own CPU per request (it shares the machine)."""
    port = int(url.rsplit(":", 1)[1])
    before = resource.getrusage(resource.RUSAGE_SELF)
    if client_kind == "httpx":
        result = asyncio.run(run_httpx_load(url, images, clients, requests))
    else:
        result = asyncio.run(run_load("127.0.0.1", port, "/predict", images, clients, requests))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**result.summary(), "client_cpu_ms_per_request": round(cpu_s / requests * 1000, 3)}


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


def request_floor(model_dir: Path, images: list[bytes], repeats: int = 3) -> dict:
    """Medians, in this process, of the two steps every API request must take: decoding the
    upload (sniff, decode, orientation, resize to the contract) and ONNX Runtime at batch 1."""
    from skindx.inference.images import decode_image
    from skindx.inference.model import load_packaged_model
    from skindx.inference.preprocessing import resize_to_contract

    model = load_packaged_model(model_dir)
    decode_s, infer_s = [], []
    for _ in range(repeats):
        for data in images:
            started = time.perf_counter()
            upload = decode_image(data, contract=model.contract)  # as the API decodes
            pixels = resize_to_contract(upload.image, model.contract)
            decoded = time.perf_counter()
            model.predict(pixels[None])
            decode_s.append(decoded - started)
            infer_s.append(time.perf_counter() - decoded)
    return {
        "decode_and_resize_ms": round(statistics.median(decode_s) * 1000, 2),
        "onnx_batch_1_ms": round(statistics.median(infer_s) * 1000, 2),
    }


def http_stack() -> dict:
    """What uvicorn's "auto" picks for both servers (they run in this interpreter's env)."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")}
    return {
        "loop": "uvloop" if found["uvloop"] else "asyncio",
        "http": "httptools" if found["httptools"] else "h11",
    }


def report_header(benchmark: str, *, http: bool = True) -> dict:
    """The fields every benchmark's JSON starts with: what ran, when, where, on what; with
    `http`, the HTTP stack the servers ran on (the serving benchmarks)."""
    header = {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    return {**header, "http_stack": http_stack()} if http else header


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when a phase answered nothing (no latency to compare)."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def paired_ratios(api: dict, base: dict, many: str) -> dict:
    """Ratios of one round, API and baseline measured back to back (so drifts in the machine's
    speed hit both)."""
    single = "one_client"
    return {
        "p50_speedup_1_client": ratio(base[single]["p50_ms"], api[single]["p50_ms"]),
        "p99_speedup_1_client": ratio(base[single]["p99_ms"], api[single]["p99_ms"]),
        f"throughput_ratio_{many}": ratio(
            api[many]["throughput_rps"], base[many]["throughput_rps"]
        ),
        f"p99_speedup_{many}": ratio(base[many]["p99_ms"], api[many]["p99_ms"]),
    }


def median_of(values: Iterable[float | None]) -> float | None:
    """The median of the known values (a round that answered nothing has None)."""
    known = [v for v in values if v is not None]
    return round(float(statistics.median(known)), 2) if known else None


def write_report(out: Path, report: dict) -> None:
    """A benchmark's JSON result at `out` (its folder made when missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (what `uptime` shows)."""
    return [round(x, 2) for x in os.getloadavg()]


def api_command(port: int) -> list[str]:
    """This API under uvicorn on 127.0.0.1:`port` (its settings come from the environment)."""
    return [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]  # fmt: skip


def read_inputs(model_dir: Path, images_dir: Path) -> tuple[list[bytes], dict]:
    """The images' bytes and the package's card, or SystemExit saying what is missing."""
    if not (model_dir / "model.json").is_file():
        raise SystemExit(f"no packaged model in {model_dir}: run `make repro` or pass --model-dir")
    images = [p.read_bytes() for p in sorted(images_dir.glob("*.jpg"))]
    if not images:
        raise SystemExit(f"no .jpg images in {images_dir}")
    return images, json.loads((model_dir / "model.json").read_text())


@contextlib.contextmanager
def api_pair(envs: dict[str, dict[str, str]], images: list[bytes], warmup: int):
    """Two API servers, one per environment in `envs` {name: env}, started and warmed up with
    `warmup` one-client requests each; yields {name: url}."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, env in envs.items():
            port = free_port()
            urls[name] = stack.enter_context(server(api_command(port), port, env, name))
        for url in urls.values():
            load(url, images, 1, warmup, "lean")
        yield urls


def ab_report(
    benchmark: str,
    card: dict,
    images_dir: Path,
    n_images: int,
    names: tuple[str, str],
    rounds: list[dict],
    concurrency: int,
    load_at_start: list[float],
) -> tuple[dict, dict, dict, int]:
    """The JSON body shared by the A/B benchmarks, and (summary, ratios, errors) for their own
    fields and their one-line printout."""
    single, many = "one_client", f"{concurrency}_clients"
    ratios, summary, errors = summarize_rounds(rounds, names, (single, many))
    report = {
        **report_header(benchmark),
        "model": {
            "version": card.get("version"),
            "arch": card.get("architecture", {}).get("arch"),
            "input_size": card["preprocessing"]["input_size"],
        },
        "images": {"dir": str(images_dir), "count": n_images},
        "summary": f"medians over the rounds; ratios ({names[0]} / {names[1]}) are the median "
        "of each round's paired ratio",
        "results": summary,
        "ratios": ratios,
        "load_average": {"start": load_at_start, "end": load_average(), "cpus": os.cpu_count()},
        "errors": errors,
        "rounds": rounds,
    }
    for name in names:
        one, conc = summary[name][single], summary[name][many]
        print(f"{name:8} p50 {one['p50_ms']} ms | {concurrency} clients "
              f"{conc['throughput_rps']} req/s")  # fmt: skip
    return report, summary, ratios, errors


def ab_rounds(
    urls: dict[str, str],
    images: list[bytes],
    *,
    rounds: int,
    requests_single: int,
    requests: int,
    concurrency: int,
) -> list[dict]:
    """Two servers of the same API, `urls` {a: url, b: url}, measured in interleaved rounds
    (a b, b a, ...): one client, then `concurrency` clients; each round's paired ratios a / b
    of the one-client p50 and of the throughput. Used by bench_prediction_log and bench_tta."""
    a, b = urls
    single, many = "one_client", f"{concurrency}_clients"
    measured_rounds = []
    for number in range(1, rounds + 1):
        order = (a, b) if number % 2 else (b, a)
        measured: dict = {
            "round": number,
            "started": time.strftime("%H:%M:%S", time.gmtime()),
            "load_average": load_average(),  # other jobs on the machine: state it with the result
        }
        for name in order:
            print(f"round {number}/{rounds}: measuring {name} ...", flush=True)
            measured[name] = {
                single: load(urls[name], images, 1, requests_single, "lean"),
                many: load(urls[name], images, concurrency, requests, "lean"),
            }
        measured["ratios"] = {
            "p50_ratio_1_client": ratio(
                measured[a][single]["p50_ms"], measured[b][single]["p50_ms"]
            ),
            f"throughput_ratio_{many}": ratio(
                measured[a][many]["throughput_rps"], measured[b][many]["throughput_rps"]
            ),
        }
        measured_rounds.append(measured)
        print(f"  {measured['ratios']}", flush=True)
    return measured_rounds


def summarize_rounds(
    rounds: list[dict], servers: Iterable[str], phases: Iterable[str]
) -> tuple[dict, dict, int]:
    """Interleaved rounds -> (each paired ratio's median over the rounds, each server's
    per-phase latency and throughput medians, the errors of every load); shared with
    bench_prediction_log.py."""
    servers, phases = list(servers), list(phases)
    ratios = {key: median_of(r["ratios"][key] for r in rounds) for key in rounds[0]["ratios"]}
    summary = {
        name: {
            phase: {
                metric: median_of(r[name][phase][metric] for r in rounds)
                for metric in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")
            }
            for phase in phases
        }
        for name in servers
    }
    errors = sum(r[n][p]["errors"] for r in rounds for n in servers for p in phases)
    return ratios, summary, errors


def worst_of(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def reaches(value: float | None, target: float) -> bool:
    return value is not None and value >= target


def shown(value: float | None, width: int) -> str:
    return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "serving" / "model")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--requests", type=int, default=400, help="requests at N clients")
    parser.add_argument("--requests-single", type=int, default=150, help="requests at 1 client")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="API/baseline rounds, interleaved")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--client",
        choices=("lean", "httpx"),
        default="lean",
        help="lean: bench/loadgen.py (little CPU); httpx: a typical Python client, for comparison",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()

    images, card = read_inputs(model_dir, args.images)

    env = dict(os.environ, SKINDX_MODEL_DIR=str(model_dir), SKINDX_LOG_LEVEL="warning")
    api_port, baseline_port = free_port(), free_port()
    api_cmd = api_command(api_port)
    baseline_cmd = [
        sys.executable,
        str(Path(__file__).with_name("reference_server.py")),
        "--model-dir",
        str(model_dir),
        "--port",
        str(baseline_port),
    ]
    single, many = "one_client", f"{args.concurrency}_clients"
    floor = request_floor(model_dir, images)
    rounds: list[dict] = []
    # both run (the same model, checked below); only the one being measured gets load
    with (
        server(api_cmd, api_port, env, "API") as api_url,
        server(baseline_cmd, baseline_port, env, "baseline") as baseline_url,
    ):
        max_difference = agreement(api_url, baseline_url, images)
        urls = {"api": api_url, "baseline": baseline_url}
        for url in urls.values():
            load(url, images, 1, args.warmup, args.client)
        for number in range(1, args.rounds + 1):
            # alternate who goes first, so neither always meets the machine in the same state
            order = ("api", "baseline") if number % 2 else ("baseline", "api")
            measured: dict = {
                "round": number,
                "started": time.strftime("%H:%M:%S", time.gmtime()),
            }
            for name in order:
                print(f"round {number}/{args.rounds}: measuring {name} ...", flush=True)
                measured[name] = {
                    single: load(urls[name], images, 1, args.requests_single, args.client),
                    many: load(urls[name], images, args.concurrency, args.requests, args.client),
                }
            measured["ratios"] = paired_ratios(measured["api"], measured["baseline"], many)
            rounds.append(measured)
            print(f"  {measured['ratios']}", flush=True)

    ratios, summary, errors = summarize_rounds(rounds, ("api", "baseline"), (single, many))
    worst = {key: worst_of(r["ratios"][key] for r in rounds) for key in ratios}
    throughput_key = f"throughput_ratio_{many}"
    met = {
        "p50_speedup_1_client": reaches(
            ratios["p50_speedup_1_client"], TARGETS["p50_speedup_1_client"]
        ),
        throughput_key: reaches(ratios[throughput_key], TARGETS["throughput_ratio_16_clients"]),
        "errors": errors == 0,
    }
    report = {
        **report_header("serving"),
        "client": args.client,
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
        "request_floor_in_process": floor,
        "summary": "medians over the rounds; ratios are the median of each round's paired ratio",
        "results": summary,
        "ratios": ratios,
        "worst_round_ratios": worst,
        "errors": errors,
        "rounds": rounds,
        "targets": TARGETS,
        "targets_met": met,
    }
    write_report(args.out, report)

    print(
        f"\nmodel {report['model']['arch']} @ {report['model']['input_size']} px, "
        f"{len(images)} full-res images, {os.cpu_count()} CPUs, {args.client} client, "
        f"{args.rounds} rounds (medians); max |p_api - p_baseline| = {max_difference:.2e}"
    )
    print(
        f"in-process floor of one request: decode+resize {floor['decode_and_resize_ms']} ms, "
        f"ONNX Runtime batch 1 {floor['onnx_batch_1_ms']} ms"
    )
    print(
        f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} | {args.concurrency} clients: "
        f"{'req/s':>8} {'p99 ms':>8}"
    )
    for name in ("api", "baseline"):
        one, conc = summary[name][single], summary[name][many]
        print(
            f"{name:10} {shown(one['p50_ms'], 8)} {shown(one['p95_ms'], 8)} "
            f"{shown(one['p99_ms'], 8)} | {'':11}{shown(conc['throughput_rps'], 8)} "
            f"{shown(conc['p99_ms'], 8)}"
        )
    for key, value in ratios.items():
        print(f"{key}: {value}x (worst round {worst[key]}x)")
    written = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"errors: {errors}; targets met: {met}  -> {written}")


if __name__ == "__main__":
    main()
