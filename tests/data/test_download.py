"""Downloads against a real HTTP server on 127.0.0.1 serving a zip of real images built here.

The server honours `Range: bytes=N-` (as S3 does) unless told not to, and records every
request, so the tests can see what was asked for and what was sent.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skindx.data.download import Archive, download, extract_zip, fetch, fetch_all
from skindx.data.errors import DownloadError
from skindx.data.sources import ResolvedSource, materialize, read_source
from tests.data.conftest import make_isic2018_layout


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                body = server.files.get(self.path)
                record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
                server.requests.append(record)
                if body is None:
                    self.send_error(404, "not found")
                    return
                start = 0
                spec = self.headers.get("Range")
                if spec and server.honour_range:
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                # recorded before the write: the client can finish reading, and the test look
                # at the record, before this thread returns from write() (a flaky failure)
                record["sent"] = len(body) - start
                self.wfile.write(body[start:])

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_zip(fullres_images: list[Path], tmp_path_factory) -> bytes:
    """A real zip of 12 real full-resolution images under a top-level folder."""
    folder = tmp_path_factory.mktemp("zip") / "ISIC2018_Task3_Training_Input"
    folder.mkdir()
    for image in fullres_images[:12]:
        (folder / image.name).write_bytes(image.read_bytes())
    return zip_folder(folder)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_a_zip(server: FileServer, image_zip: bytes, tmp_path: Path) -> Path:
    """Download the zip served at /a.zip into tmp_path/a.zip, size and sha256 pinned."""
    return download(
        f"{server.url}/a.zip",
        tmp_path / "a.zip",
        size=len(image_zip),
        sha256=sha(image_zip),
        progress=False,
    )


def test_download_verifies_and_renames(server: FileServer, image_zip: bytes, tmp_path: Path):
    server.files["/a.zip"] = image_zip
    dest = download_a_zip(server, image_zip, tmp_path)
    assert dest.read_bytes() == image_zip
    assert not (tmp_path / "a.zip.part").exists()


def test_partial_download_is_resumed_with_a_range_request(
    server: FileServer, image_zip: bytes, tmp_path: Path
):
    server.files["/a.zip"] = image_zip
    half = len(image_zip) // 2
    (tmp_path / "a.zip.part").write_bytes(image_zip[:half])
    dest = download_a_zip(server, image_zip, tmp_path)
    assert dest.read_bytes() == image_zip
    assert server.requests == [
        {"path": "/a.zip", "range": f"bytes={half}-", "sent": len(image_zip) - half}
    ]


def test_server_that_ignores_ranges_makes_the_download_start_over(
    server: FileServer, image_zip: bytes, tmp_path: Path
):
    server.files["/a.zip"] = image_zip
    server.honour_range = False
    (tmp_path / "a.zip.part").write_bytes(b"stale bytes from another file")
    dest = download(
        f"{server.url}/a.zip", tmp_path / "a.zip", sha256=sha(image_zip), progress=False
    )
    assert dest.read_bytes() == image_zip
    assert server.requests[0]["sent"] == len(image_zip)


def test_complete_part_file_is_verified_without_refetching(
    server: FileServer, image_zip: bytes, tmp_path: Path
):
    server.files["/a.zip"] = image_zip
    (tmp_path / "a.zip.part").write_bytes(image_zip)
    download(
        f"{server.url}/a.zip",
        tmp_path / "a.zip",
        size=len(image_zip),
        sha256=sha(image_zip),
        progress=False,
    )
    assert server.requests == []  # the size says it is complete; only the checksum is checked


def test_checksum_mismatch_is_an_error_and_removes_the_corrupt_file(
    server: FileServer, image_zip: bytes, tmp_path: Path
):
    server.files["/a.zip"] = image_zip
    with pytest.raises(DownloadError, match="sha256 mismatch") as info:
        download(f"{server.url}/a.zip", tmp_path / "a.zip", sha256="0" * 64, progress=False)
    assert sha(image_zip) in str(info.value)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_size_mismatch_is_an_error(server: FileServer, image_zip: bytes, tmp_path: Path):
    server.files["/a.zip"] = image_zip
    with pytest.raises(DownloadError, match=f"expected {len(image_zip) + 1} bytes"):
        download(f"{server.url}/a.zip", tmp_path / "a.zip", size=len(image_zip) + 1, progress=False)


def test_http_error_names_the_url(server: FileServer, tmp_path: Path):
    with pytest.raises(DownloadError, match=r"/missing.zip: HTTP 404"):
        download(f"{server.url}/missing.zip", tmp_path / "missing.zip", progress=False)


def test_unreachable_server_is_a_clear_error(tmp_path: Path):
    srv = FileServer()
    url = f"{srv.url}/a.zip"
    srv.close()
    with pytest.raises(DownloadError, match="cannot download"):
        download(url, tmp_path / "a.zip", progress=False, timeout=5)


def test_extract_zip_once_and_reject_unsafe_paths(image_zip: bytes, tmp_path: Path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(image_zip)
    out = extract_zip(archive, tmp_path / "a")
    assert len(list(out.rglob("ISIC_*.jpg"))) == 12
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DownloadError, match="unsafe path"):
        extract_zip(evil, tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()


def test_fetch_all_isic2018_archives_then_read_them(
    server: FileServer, fullres_dir: Path, tmp_path: Path
):
    """The whole download path of ingest: three ISIC 2018 archives -> an isic2018 source."""
    layout = make_isic2018_layout(fullres_dir, tmp_path / "isic")
    files = {
        "/ISIC2018_Task3_Training_Input.zip": zip_folder(layout / "ISIC2018_Task3_Training_Input"),
        "/ISIC2018_Task3_Training_GroundTruth.zip": zip_folder(
            layout / "ISIC2018_Task3_Training_GroundTruth"
        ),
        "/ISIC2018_Task3_Training_LesionGroupings.csv": (
            layout / "ISIC2018_Task3_Training_LesionGroupings.csv"
        ).read_bytes(),
    }
    server.files.update(files)
    downloads = tmp_path / "downloads"
    params = {
        "archives": {
            name: {"url": server.url + path, "size": len(body), "sha256": sha(body)}
            for name, (path, body) in zip(
                ["images", "ground_truth", "lesion_groupings"], files.items(), strict=True
            )
        },
    }
    folder = materialize(ResolvedSource("download"), params, downloads, progress=False)
    table = read_source(folder)
    assert table.layout == "isic2018" and len(table.metadata) == 70 and table.n_missing_images == 0
    # A second run finds everything in place: no request at all.
    server.requests.clear()
    fetch_all(params, downloads, progress=False)
    assert server.requests == []


def test_data_source_url_is_downloaded_and_extracted(
    server: FileServer, fullres_dir: Path, tmp_path: Path
):
    server.files["/ham.zip"] = zip_folder(fullres_dir)
    folder = materialize(
        ResolvedSource("data.source", url=f"{server.url}/ham.zip"),
        {},
        tmp_path / "dl",
        progress=False,
    )
    assert read_source(folder).layout == "flat"
    assert fetch(Archive("x", f"{server.url}/ham.zip"), tmp_path / "dl", progress=False) == folder
