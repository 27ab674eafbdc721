"""The documentation site (mkdocs.yml, docs/hooks/skindx_docs.py): MkDocs + Material, README.md as
the home page, offline search, the API page from serving.app's OpenAPI schema; built in strict
mode, so a broken link or anchor fails the build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.e2e.test_browser import browser  # noqa: F401 (the headless Chromium fixture)

PAGES = ["index", "results", "stack", "contracts", "api", "notebook"]
ENDPOINTS = ["/predict", "/predict/batch", "/explain", "/model", "/health", "/ready"]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("SKINDX_ADMIN_TOKEN", None)  # the schema as a default deployment serves it
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The project's own docs, built as `make docs` builds them."""
    out = tmp_path_factory.mktemp("site") / "site"
    result = mkdocs_build(REPO_ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


class AssetRefs(HTMLParser):
    """Every URL a browser fetches by itself to render a page (not the links a reader clicks)."""

    FETCHED = {"script": "src", "img": "src", "iframe": "src", "source": "src", "link": "href"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        name = self.FETCHED.get(tag)
        if name and attrs.get(name):
            self.urls.append(attrs[name])


def parse(page: Path) -> AssetRefs:
    parser = AssetRefs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.mark.slow
def test_the_projects_docs_build_strict_with_every_page_in_the_nav(site):
    for name in PAGES:
        html = (site / f"{name}.html").read_text(encoding="utf-8")
        links = parse(site / f"{name}.html").links
        assert {f"{other}.html" for other in PAGES if other != name} <= set(links), name
        assert '<nav class="md-nav' in html, name
    assert "<table>" in (site / "index.html").read_text(encoding="utf-8")
    contracts = (site / "contracts.html").read_text(encoding="utf-8")
    assert "<title>Contracts - SkinDX</title>" in contracts
    for key in ("scaler_state", "stopped_early", "monitor"):  # the checkpoint's keys
        assert f"<code>{key}</code>" in contracts, key


@pytest.mark.slow
def test_readme_is_the_home_page_with_links_and_images_into_the_site(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<h1 id="skindx">SkinDX' in index
    refs = parse(site / "index.html")
    # README's links into docs/ lose the prefix; its anchors survive
    assert "results.html#full-on-a-gpu" in refs.links and "stack.html" in refs.links
    assert "results/ui-demo-model.jpg" in refs.urls
    assert (site / "results" / "ui-demo-model.jpg").is_file()
    # a README link to a repository file outside docs/ publishes that file at the same path
    assert "bench/results/serving.json" in refs.links
    assert (site / "bench" / "results" / "serving.json").read_bytes() == (
        REPO_ROOT / "bench" / "results" / "serving.json"
    ).read_bytes()
    assert '<h2 id="the-api">' in index  # headings have the ids README's own #links use


@pytest.mark.slow
def test_search_works_offline(site):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"] for doc in index["docs"]}
    assert {f"{name}.html" for name in PAGES} <= locations
    assert any(loc.startswith("api.html#") for loc in locations)
    assert any("balanced accuracy" in doc["text"] for doc in index["docs"])
    # the offline plugin inlines the index for file:// and its web-worker shim is served locally
    inline = (site / "search" / "search_index.js").read_text(encoding="utf-8")
    assert inline.startswith("var __index = ")
    shim = "assets/vendor/iframe-worker/shim.js"
    assert shim in parse(site / "index.html").urls and (site / shim).is_file()


@pytest.mark.slow
def test_no_page_fetches_anything_from_another_host(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(PAGES)
    for page in pages:
        for url in parse(page).urls:
            assert not url.startswith(("http:", "https:", "//")), f"{page.name} loads {url}"
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        for marker in ("url(http", "url(//", 'url("http', "url('http", "@import"):
            assert marker not in text, f"{css.name} loads {marker}…"


@pytest.mark.slow
def test_the_api_page_documents_the_apps_real_endpoints(site):
    from serving.app import create_app

    schema = create_app().openapi()
    published = json.loads((site / "api" / "openapi.json").read_text(encoding="utf-8"))
    assert published["paths"].keys() == schema["paths"].keys()
    assert set(ENDPOINTS) <= published["paths"].keys()
    api = (site / "api.html").read_text(encoding="utf-8")
    for path in ENDPOINTS:
        assert path in api, path
    assert 'id="post-predict"' in api and 'id="post-explain"' in api
    assert "api/openapi.json" in parse(site / "api.html").links


# --- small projects (slow: a build each): what strict mode catches, what the hooks do --------------------------------


def make_docs_project(root: Path, readme: str | None, pages: dict[str, str]) -> Path:
    """A throw-away project with the real mkdocs.yml and hooks, an API page (serving comes from
    the checkout, on PYTHONPATH), and its own README and pages."""
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    config["nav"] = [{"Home": "index.md"}, *pages, "api.md"]
    (root / "docs").mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "docs" / "hooks", root / "docs" / "hooks")
    shutil.copytree(REPO_ROOT / "docs" / "assets", root / "docs" / "assets")
    (root / "docs" / "api.md").write_text("# API\n\n[OAD(api)]\n")
    (root / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    if readme is not None:
        (root / "README.md").write_text(readme)
    for name, text in pages.items():
        (root / "docs" / name).write_text(text)
    return root / "mkdocs.yml"


@pytest.mark.slow
def test_links_headings_and_repository_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.py").write_text("print('x')\n")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "d.png").write_bytes(b"\x89PNG fake")
    config = make_docs_project(
        tmp_path,
        "# My Project\n\nSee [the guide](docs/guide.md#set-up) and [code](src/x.py).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n![shot](docs/img/d.png)\n",
        {"guide.md": "# Guide\n\n## Set up\n\n## Set up\n\nBack to [the README](index.md).\n"},
    )
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert {"index.html", "guide.html", "api.html"} <= {p.name for p in site.glob("*.html")}
    index = (site / "index.html").read_text()
    guide = (site / "guide.html").read_text()
    assert "<title>SkinDX</title>" in index and "<title>Guide - SkinDX</title>" in guide
    assert "<td>1</td>" in index
    assert 'href="guide.html#set-up"' in index
    assert 'src="img/d.png"' in index and (site / "img" / "d.png").read_bytes() == b"\x89PNG fake"
    assert 'href="src/x.py"' in index and (site / "src" / "x.py").read_text() == "print('x')\n"
    assert 'href="index.html"' in guide
    assert '<h2 id="set-up">' in guide and '<h2 id="set-up_1">' in guide


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path):
    readme = (
        "# P\n\n[gone](docs/missing.md), [no heading](docs/guide.md#no-such-heading), "
        "![no image](docs/img/none.png)\n"
    )
    config = make_docs_project(tmp_path, readme, {"guide.md": "# Guide\n\n## Set up\n"})
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode != 0
    for problem in ("missing.md", "no-such-heading", "none.png"):  # every one is named
        assert problem in result.stdout + result.stderr, problem


@pytest.mark.slow
def test_a_project_without_readme_is_a_clear_error(tmp_path):
    config = make_docs_project(tmp_path, None, {"guide.md": "# Guide\n"})
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode != 0 and "nothing to build" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_search_finds_pages_in_a_real_browser_from_file_urls(site, browser):  # noqa: F811
    """Material's search from file:// (the offline plugin's case): no server, no network."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "index.html").as_uri())
    box = WebDriverWait(browser, 20).until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input"))
    )
    box.send_keys("temperature")
    hits = WebDriverWait(browser, 30).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")
    )
    pages = {Path(hit.get_attribute("href").split("?")[0]).name for hit in hits}
    assert {"index.html", "contracts.html"} <= pages, pages


# --- docs/contracts.md against the code it describes ---------------------------------------------

CONTRACTS = REPO_ROOT / "docs" / "contracts.md"


def documented_codes(section: str) -> set[str]:
    """The `code` spans of one `## ...` section of docs/contracts.md."""
    import re

    text = CONTRACTS.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"`([^`]+)`", text[start : end if end > 0 else None]))


def test_contracts_name_every_configured_path():
    from skindx.config import ProjectPaths, load_params

    paths = ProjectPaths.from_params(load_params(REPO_ROOT / "params.yaml"))
    documented = documented_codes("Paths")
    for name, value in paths.to_dict().items():
        assert f"paths.{name}" in documented, f"docs/contracts.md lacks paths.{name} ({value})"


def test_contracts_list_every_checkpoint_key(processed_dir, tmp_path):
    from skindx.models.checkpoint import load_checkpoint
    from tests.helpers.training import make_trainer

    make_trainer(processed_dir, tmp_path, epochs=1).fit()
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    documented = documented_codes("The checkpoint")
    missing = sorted(set(checkpoint) - documented)
    assert not missing, f"docs/contracts.md lacks the checkpoint key(s) {missing}"
    history = sorted(set(checkpoint["history"][0]) - documented)
    assert not history, f"docs/contracts.md lacks the history column(s) {history}"


def test_contracts_list_every_model_card_key(packaged_model_dir):
    card = json.loads((packaged_model_dir / "model.json").read_text())
    documented = documented_codes("Model card")
    missing = sorted(set(card) - documented)
    assert not missing, f"docs/contracts.md lacks the model card key(s) {missing}"
