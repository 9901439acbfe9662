"""A Markdown report as one self-contained HTML page: rendered by markdown-it-py (CommonMark with tables), its
images embedded as ``data:`` URIs, a short inline style sheet; no external file, so it can be mailed or attached."""

from __future__ import annotations

import base64
import html
import mimetypes
from collections.abc import Mapping

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
code { background: #f2f2f2; padding: 0 0.2rem; }
"""


def data_uri(name: str, data: bytes) -> str:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def render_html(markdown: str, images: Mapping[str, bytes], title: str) -> str:
    """``markdown`` as a full HTML page; an image whose source is a key of ``images`` is embedded (others are left
    as they are). Raw HTML in the Markdown is escaped, not passed through."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            src = child.attrGet("src") if child.type == "image" else None
            if src in images:
                child.attrSet("src", data_uri(str(src), images[str(src)]))
    body = md.renderer.render(tokens, md.options, {})
    return (
        f"<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<title>{html.escape(title)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
