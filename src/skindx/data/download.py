"""HTTP(S) downloads that survive interruptions: progress bar, resume, size/sha256 check.

A download goes to `<name>.part` first; a rerun resumes it with a `Range` request (a server
that ignores ranges makes it start over). Only a file whose size and sha256 match what the
config expects is renamed to its final name; a mismatching one is deleted so the next run
starts clean. Zips are extracted into a folder next to the archive, rejecting unsafe paths.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from skindx.data.errors import DownloadError
from skindx.data.images import sha256_file

_CHUNK = 1 << 20
USER_AGENT = "skindx-downloader/1.0"


@dataclass(frozen=True)
class Archive:
    """One file to fetch; `size`/`sha256` None means "not pinned" (warned, not verified)."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return filename_from_url(self.url)

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any]) -> Archive:
        size = params.get("size")
        sha = params.get("sha256")
        return cls(
            name=name,
            url=str(params["url"]),
            size=int(size) if size is not None else None,
            sha256=str(sha).lower() if sha else None,
        )


def filename_from_url(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    if not name:
        raise DownloadError(f"cannot derive a file name from the URL {url}")
    return name


def _verify(path: Path, size: int | None, sha256: str | None, url: str) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: expected {size} bytes, got {actual_size}; the partial file was removed, "
            "run again to download it afresh"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            path.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: sha256 mismatch (expected {sha256}, got {actual}); the corrupt file "
                "was removed, run again to download it afresh"
            )


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` if present; returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        _verify(dest, size, sha256, url)  # raises (and removes it) if it does not match
        return dest
    if sha256 is None:
        print(
            f"warning: no sha256 configured for {url}; the download is not verified",
            file=sys.stderr,
        )

    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0

    if size is None or offset < size:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the part file already holds the whole resource
                response = None
            else:
                raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot download {url}: {reason}") from exc
        if response is not None:
            with response:
                _receive(response, part, offset, size, url, progress)

    _verify(part, size, sha256, url)
    part.replace(dest)
    return dest


def _receive(response, part: Path, offset: int, size: int | None, url: str, progress: bool) -> None:
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        start = content_range.split(" ")[-1].split("-")[0]
        if start != str(offset):
            raise DownloadError(f"{url}: server resumed at {content_range!r}, not at byte {offset}")
        mode = "ab"
    else:  # 200: the server sent the whole file (it ignores ranges, or nothing to resume)
        offset, mode = 0, "wb"
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else size
    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=not progress,
        file=sys.stderr,
    )
    try:
        with part.open(mode) as fh, bar:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    except (OSError, TimeoutError) as exc:
        raise DownloadError(
            f"download of {url} interrupted ({exc}); {part} is kept and the next run resumes it"
        ) from exc


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest` (once: a marker records the archive's sha256)."""
    archive, dest = Path(archive), Path(dest)
    marker = dest / ".extracted"
    digest = sha256_file(archive)
    if marker.exists() and marker.read_text().strip() == digest:
        return dest
    staging = dest.with_name(dest.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = PurePosixPath(member.filename)
                if target.is_absolute() or ".." in target.parts:
                    raise DownloadError(f"{archive}: refusing unsafe path {member.filename!r}")
            zf.extractall(staging)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip archive: {exc}") from exc
    shutil.rmtree(dest, ignore_errors=True)
    staging.replace(dest)
    marker.write_text(digest + "\n")
    return dest


def fetch(archive: Archive, download_dir: Path, *, progress: bool = True) -> Path:
    """Download one archive and, for a zip, extract it; returns the file or the folder."""
    path = download(
        archive.url,
        Path(download_dir) / archive.filename,
        size=archive.size,
        sha256=archive.sha256,
        progress=progress,
    )
    if path.suffix.lower() == ".zip":
        return extract_zip(path, path.with_suffix(""))
    return path


def fetch_all(
    download_params: Mapping[str, Any], download_dir: str | Path, *, progress: bool = True
) -> Path:
    """Fetch every archive of `data.download` into `download_dir` (paths.downloads_dir);
    returns that folder."""
    download_dir = Path(download_dir)
    archives = download_params.get("archives") or {}
    if not archives:
        raise DownloadError("data.download.archives is empty: nothing to download")
    for name, params in archives.items():
        archive = Archive.from_params(name, params)
        print(f"download: {name} <- {archive.url}", file=sys.stderr)
        fetch(archive, download_dir, progress=progress)
    return download_dir
