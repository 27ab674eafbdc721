"""MkDocs hooks of the SkinDX site (`hooks:` in mkdocs.yml).

- README.md is the home page (index.md), so the repository's front page and the site's are one
  text. Its links are written relative to the repository root; on the site they become relative
  to docs/: `docs/results.md` -> `results.md`. A README link to another repository file outside
  docs/ (a benchmark JSON) publishes that file at the same path, so no link is dead on the site.
- api.md gets the API reference: serving.app's OpenAPI schema, generated at build time (it
  cannot drift from the code), rendered to Markdown by essentials-openapi (the renderer of
  neoteroi's OAD plugin; no JavaScript, so it works offline) where api.md says `[OAD(api)]`,
  and published as api/openapi.json.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path, PurePosixPath

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
API_PAGE = "api.md"
API_MARKER = "[OAD(api)]"
SCHEMA_URI = "api/openapi.json"
# inline links and images, [text](target "title"), and src/href attributes
LINK = re.compile(r"(\]\(\s*<?)([^)\s>]+)|((?:src|href)=\")([^\"]+)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", re.I)


def openapi_schema() -> dict:
    """The schema the running API serves at /openapi.json (the app is built, not started)."""
    for path in (ROOT, ROOT / "src"):  # a plain checkout (Docker build stage) has no install
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        from serving.app import create_app
    except ImportError as exc:
        raise PluginError(
            f"the API page needs the serving app's dependencies ({exc}): "
            "pip install -r serving/requirements.txt"
        ) from exc
    return create_app().openapi()


def readme_target(target: str, docs_dir: Path) -> tuple[str, Path | None]:
    """A README link target as seen from docs/index.md, and the repository file to publish
    for it (None when it is a docs page or asset, external, or not a repository file)."""
    if EXTERNAL.match(target):
        return target, None
    path, sep, fragment = target.partition("#")
    if not path:
        return target, None
    source = (ROOT / path).resolve()
    if source.is_relative_to(docs_dir):
        return PurePosixPath(source.relative_to(docs_dir)).as_posix() + sep + fragment, None
    if source.is_file() and source.is_relative_to(ROOT):
        return target, source
    return target, None


def rewrite_readme(text: str, docs_dir: Path) -> tuple[str, set[Path]]:
    published: set[Path] = set()

    def replace(match: re.Match) -> str:
        prefix = match.group(1) or match.group(3)
        new, source = readme_target(match.group(2) or match.group(4), docs_dir)
        if source is not None:
            published.add(source)
        return prefix + new

    return LINK.sub(replace, text), published


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config["skindx_openapi"] = openapi_schema()  # once per build; fails early with a clear error
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs_dir = Path(config["docs_dir"]).resolve()
    if files.get_file_from_path("index.md") is not None:
        raise PluginError("docs/index.md exists: the home page is README.md, remove one of them")
    if not README.is_file():
        raise PluginError(f"{README} not found: nothing to build the home page from")
    text, published = rewrite_readme(README.read_text(encoding="utf-8"), docs_dir)
    files.append(File.generated(config, "index.md", content=text))
    for source in sorted(published):
        rel = PurePosixPath(source.relative_to(ROOT)).as_posix()
        if files.get_file_from_path(rel) is None:
            files.append(File.generated(config, rel, abs_src_path=str(source)))
    schema = json.dumps(config["skindx_openapi"], indent=2) + "\n"
    files.append(File.generated(config, SCHEMA_URI, content=schema))
    return files


@event_priority(50)  # before other plugins see the page
def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != API_PAGE:
        return markdown
    if API_MARKER not in markdown:
        raise PluginError(f"{API_PAGE} lost its {API_MARKER} marker: the API reference goes there")
    from openapidocs.mk.v3 import OpenAPIV3DocumentationHandler

    rendered = OpenAPIV3DocumentationHandler(config["skindx_openapi"], style="MKDOCS").write()
    return markdown.replace(API_MARKER, rendered)
