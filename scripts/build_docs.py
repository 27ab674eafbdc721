"""Render README.md and docs/*.md to a small static HTML site (served by nginx at /docs/).

    python scripts/build_docs.py [--out site]

README.md becomes index.html, docs/NAME.md becomes NAME.html; links between the Markdown files
are rewritten to the HTML pages, other files in docs/ (images) are copied as they are.
Uses markdown-it-py (CommonMark + tables), no other dependency, so the nginx image can run it.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOCS_PREFIX = re.compile(r'(src|href)="docs/')
LINK_TARGET = re.compile(r'href="(?![a-z][a-z0-9+.-]*:|#|/)([^"#?]+\.md)(#[^"]*)?"', re.I)

STYLE = """
body{margin:0;font:16px/1.6 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2933}
.layout{display:flex;min-height:100vh}
nav{flex:0 0 220px;background:#f3f5f7;padding:1.5rem 1rem;border-right:1px solid #dde2e6}
nav a{display:block;padding:.25rem .5rem;border-radius:4px;color:#1f4e79;text-decoration:none}
nav a.current{background:#dbe7f3;font-weight:600}
main{flex:1;max-width:900px;padding:1.5rem 2.5rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;border-radius:6px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem}
th{background:#f6f8fa}img{max-width:100%}
"""


@dataclass(frozen=True)
class Page:
    source: Path
    output: str  # file name in the site
    title: str


def slugify(text: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def add_heading_ids(state) -> None:
    """markdown-it core rule: give each heading the id that GitHub would, so #links work."""
    seen: dict[str, int] = {}
    for opening, inline in zip(state.tokens, state.tokens[1:], strict=False):
        if opening.type == "heading_open" and inline.type == "inline":
            slug = slugify(inline.content)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            opening.attrSet("id", f"{slug}-{count}" if count else slug)


def page_title(markdown: str, fallback: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def collect_pages(root: Path) -> list[Page]:
    pages = []
    readme = root / "README.md"
    if readme.exists():
        pages.append(Page(readme, "index.html", page_title(readme.read_text(), "Overview")))
    for source in sorted((root / "docs").glob("*.md")):
        name = "index-docs.html" if source.stem == "index" else f"{source.stem}.html"
        pages.append(Page(source, name, page_title(source.read_text(), source.stem)))
    if not pages:
        raise SystemExit(f"no README.md or docs/*.md under {root}: nothing to build")
    return pages


def rewrite_links(body: str, page: Page, root: Path, outputs: dict[Path, str]) -> str:
    """Links to other rendered Markdown files point at their HTML pages."""

    def replace(match: re.Match) -> str:
        target = (page.source.parent / match.group(1)).resolve()
        if target not in outputs:
            return match.group(0)
        return f'href="{outputs[target]}{match.group(2) or ""}"'

    body = LINK_TARGET.sub(replace, body)
    if page.source.parent.resolve() == root.resolve():
        # the site's root is docs/: README's links into docs/ lose that prefix
        body = DOCS_PREFIX.sub(r'\1="', body)
    return body


def render_page(page: Page, pages: list[Page], body: str) -> str:
    nav = "\n".join(
        f'<a href="{p.output}"{" class=current" if p is page else ""}>{html.escape(p.title)}</a>'
        for p in pages
    )
    return (
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        '<meta name=viewport content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(page.title)} · SkinDX docs</title>\n<style>{STYLE}</style>\n</head>\n"
        f'<body>\n<div class=layout>\n<nav aria-label="Documentation">\n{nav}\n</nav>\n'
        f"<main>\n{body}</main>\n</div>\n</body>\n</html>\n"
    )


def build_site(root: Path, out: Path) -> list[Path]:
    """Render every page into `out` (replaced whole); returns the written HTML files."""
    pages = collect_pages(root)
    renderer = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    renderer.core.ruler.push("heading_ids", add_heading_ids)
    outputs = {p.source.resolve(): p.output for p in pages}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for asset in (root / "docs").rglob("*"):  # images and other files next to the pages
        if asset.is_file() and asset.suffix.lower() != ".md":
            target = out / PurePosixPath(asset.relative_to(root / "docs").as_posix())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(asset, target)
    written = []
    for page in pages:
        body = rewrite_links(renderer.render(page.source.read_text()), page, root, outputs)
        path = out / page.output
        path.write_text(render_page(page, pages, body))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (README.md, docs/)")
    parser.add_argument("--out", type=Path, default=ROOT / "site", help="output folder")
    args = parser.parse_args(argv)
    written = build_site(args.root.resolve(), args.out.resolve())
    print(f"docs site: {len(written)} pages in {args.out}")


if __name__ == "__main__":
    main()
