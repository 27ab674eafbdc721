"""DVC stage `ingest`: find the HAM10000 source and copy it into `paths.raw_dir` (data/raw/).

Source order: data.source, $SKINDX_DATA_DIR, data.default_source, the ISIC 2018 download.
"""

from skindx.cli import run_cli
from skindx.config import ProjectPaths, stage_params
from skindx.data.ingest import MANIFEST_FILE, ingest
from skindx.data.runlog import log_data_run
from skindx.data.sources import materialize, read_source, resolve_source


def main() -> None:
    params = stage_params("data", "mlflow")
    data, paths = params["data"], ProjectPaths.from_params(params)
    resolved = resolve_source(data)
    print(f"ingest: using source {resolved.describe()}")
    folder = materialize(resolved, data.get("download") or {}, paths.downloads_dir)
    table = read_source(folder)
    print(f"ingest: layout {table.layout}, metadata {table.metadata_file}")
    raw_dir = paths.raw_dir
    manifest = ingest(table, raw_dir, source_label=str(folder))
    print(
        f"ingest: {manifest['n_rows']} rows, {manifest['n_images']} images -> {raw_dir}/ "
        f"({manifest['missing_images']} missing, {manifest['unlisted_images']} unlisted); "
        f"data_hash {manifest['data_hash'][:12]}"
    )
    log_data_run(
        "ingest",
        params,
        run_params={"source": folder, "source_origin": resolved.origin, "layout": table.layout},
        metrics={
            "n_rows": manifest["n_rows"],
            "n_images": manifest["n_images"],
            "missing_images": manifest["missing_images"],
            **{f"count_{dx}": n for dx, n in manifest["counts"].items() if dx.isidentifier()},
        },
        artifacts=[raw_dir / MANIFEST_FILE],
        tags={"data_source": str(folder), "layout": table.layout},
    )


if __name__ == "__main__":
    run_cli(main, "ingest")
