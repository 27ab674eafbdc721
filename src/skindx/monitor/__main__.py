"""`python -m skindx.monitor` (`make monitor`): drift and performance report of the served model.

Reads a window of the API's prediction log (SKINDX_PREDICTION_DB, as the API does) and the
reference inside the served package (paths.serving_model_dir), writes report.html and
summary.json to monitor.reports_dir (params.yaml, conf/monitor). Exit status: 0 without a drift
alarm, 1 with one (so a cron job or CI can act on it), 2 when it cannot run (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from skindx.config import ProjectPaths, load_params

EXIT_DRIFT = 1
EXIT_ERROR = 2


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or time (e.g. 2026-12-01 or 2026-12-01T08:00)"
        ) from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skindx.monitor", description=__doc__)
    parser.add_argument("--since", type=_moment, help="window start (ISO; UTC if no offset)")
    parser.add_argument("--until", type=_moment, help="window end, exclusive (default: now)")
    parser.add_argument("--days", type=float, help="window length before --until (monitor.days)")
    parser.add_argument("--db", help="SQLAlchemy URL of the log (default: SKINDX_PREDICTION_DB)")
    parser.add_argument("--model-dir", type=Path, help="package with the reference")
    parser.add_argument("--reports-dir", type=Path, help="output folder (monitor.reports_dir)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skindx.monitor.reference import ReferenceError
    from skindx.monitor.report import MonitorSettings, run_monitor
    from skindx.monitor.window import Window, WindowError, database_url, read_window

    try:
        params = load_params(args.params)
        settings = MonitorSettings.from_params(params.get("monitor", {}))
        if args.reports_dir:
            settings = MonitorSettings(**{**settings.__dict__, "reports_dir": args.reports_dir})
        model_dir = args.model_dir or ProjectPaths.from_params(params).serving_model_dir
        window = Window.resolve(
            args.since, args.until, args.days if args.days is not None else settings.days
        )
        url = args.db or database_url()
        frame = read_window(url, window)
        result = run_monitor(frame, window, model_dir, settings, database=_safe_url(url))
    except (ReferenceError, WindowError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    s = result.summary
    print(
        f"monitor: {s['n_predictions']} predictions {window.since:%Y-%m-%d %H:%M} .. "
        f"{window.until:%Y-%m-%d %H:%M} UTC, {s['performance']['n_reviewed']} reviewed"
    )
    if s["status"] != "ok":
        print(f"monitor: {s['reason']}")
    else:
        drift = s["input_drift"]
        print(
            f"monitor: input drift score {drift['drift_score']:.3f} "
            f"({drift['n_drifted_columns']}/{drift['n_columns']} statistics drifted, alarm at "
            f"{drift['drift_share']}): {'DRIFT' if drift['detected'] else 'no drift'}"
        )
        if s["prediction_drift"]:
            p = s["prediction_drift"]
            print(
                f"monitor: prediction drift ({p['method']}) {p['score']:.3f}: "
                f"{'DRIFT' if p['detected'] else 'no drift'}"
            )
    perf = s["performance"]
    if perf["n_reviewed"]:
        print(
            f"monitor: reviewed accuracy {perf['accuracy']:.3f}, "
            f"BMA {perf['balanced_accuracy']:.3f} (n={perf['n_reviewed']})"
        )
    print(
        f"monitor: wrote {result.summary_path}"
        + (f" and {result.report_path}" if result.report_path else "")
    )
    return EXIT_DRIFT if s["drift_detected"] else 0


def _safe_url(url: str) -> str:
    """The URL without its password (the summary is served under /monitoring/)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
