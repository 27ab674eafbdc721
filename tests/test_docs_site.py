"""scripts/build_docs.py: README.md and docs/*.md rendered to the static site nginx serves."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "build_docs.py"


@pytest.fixture(scope="module")
def build_docs():
    spec = importlib.util.spec_from_file_location("skindx_build_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "# My Project\n\nSee [the guide](docs/guide.md#set-up) and [code](src/x.py).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>alert(1)</script>\n"
    )
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Set up\n\n## Set up\n\nBack to [the README](../README.md).\n"
        "![diagram](img/d.png)\n"
    )
    (tmp_path / "docs" / "img" / "d.png").write_bytes(b"\x89PNG fake")
    return tmp_path


def test_builds_one_page_per_markdown_file_with_navigation(build_docs, project, tmp_path):
    written = build_docs.build_site(project, tmp_path / "site")
    assert sorted(p.name for p in written) == ["guide.html", "index.html"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<title>My Project · SkinDX docs</title>" in index
    assert (
        '<a href="guide.html">Guide</a>' in index and '<a href="index.html" class=current>' in index
    )
    assert "<table>" in index and "<td>1</td>" in index


def test_links_between_pages_point_at_html_and_headings_have_ids(build_docs, project, tmp_path):
    build_docs.build_site(project, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    guide = (tmp_path / "site" / "guide.html").read_text()
    assert 'href="guide.html#set-up"' in index
    assert 'href="src/x.py"' in index  # not a page: left alone
    assert 'href="index.html">the README' in guide
    assert '<h2 id="set-up">' in guide and '<h2 id="set-up-1">' in guide
    assert (tmp_path / "site" / "img" / "d.png").read_bytes() == b"\x89PNG fake"


def test_raw_html_in_markdown_is_escaped(build_docs, project, tmp_path):
    build_docs.build_site(project, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<script>" not in index and "&lt;script&gt;" in index


def test_an_empty_project_is_a_clear_error(tmp_path):
    (tmp_path / "docs").mkdir()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path), "--out", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "nothing to build" in out.stderr


def test_the_projects_own_docs_build(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "contracts.html").is_file()


def test_readme_images_in_docs_point_into_the_site(build_docs, project, tmp_path):
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\n![shot](docs/img/d.png)\n")
    out = tmp_path / "site"
    build_docs.build_site(project, out)
    index = (out / "index.html").read_text()
    assert 'src="img/d.png"' in index and (out / "img" / "d.png").is_file()
