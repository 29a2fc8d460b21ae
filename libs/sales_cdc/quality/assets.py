"""The Data Docs site serves its own scripts, style sheets and fonts: it works offline, from ``file://`` and from a
private bucket (behind CloudFront).

GX's page templates load them from CDNs. ``static/vendor.json`` names each CDN URL and the file that replaces it
(fetched at a pinned version by ``scripts/vendor_docs_assets.py``); :func:`install` copies the files into the site's
``static/vendor/`` and :func:`serve_locally` points the pages written at them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
SITE_FOLDER = "static/vendor"  # under the site's root, beside GX's own static/ assets


@functools.cache
def replacements() -> dict[str, str]:
    """CDN URL -> the file's path under the site's ``static/vendor``."""
    config = json.loads((STATIC / "vendor.json").read_text())
    found = {}
    for package in config["packages"]:
        folder = package["npm"].rsplit("@", 1)[0].split("/")[-1]
        for name, urls in package["files"].items():
            found.update({url: f"{folder}/{name}" for url in urls})
    return found


# a CDN tag's subresource-integrity and CORS attributes: a local file:// script with crossorigin is refused
_CDN_ATTRIBUTES = re.compile(r'\s+(integrity|crossorigin)="[^"]*"')


# GX's logo, loaded from GX's bucket with a time stamp (a request per page view); GX copies it into static/images
_GX_IMAGES = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)(\?[^\"']*)?")


# GX's own static/ links count a page's depth for a layout deeper than the one it writes (a validation page's
# favicon pointed above the site): each is pointed at the site's root again
_GX_STATIC = re.compile(r"""(["'(])(?:\./|(?:\.\./)+)static/""")


def served_locally(html: str, root: str) -> str:
    """``html`` with every CDN URL it loads replaced by the site's own copy (``root``: the page's way to the root)."""
    html = _GX_STATIC.sub(lambda m: f"{m[1]}{root}static/", html)
    html = _GX_IMAGES.sub(lambda m: f"{root}static/images/{m[1]}", html)
    for url, path in replacements().items():
        if url in html:
            html = re.sub(rf'(<[^>]*"){re.escape(url)}("[^>]*>)',
                          lambda m, p=path: _CDN_ATTRIBUTES.sub("", f"{m[1]}{root}{SITE_FOLDER}/{p}{m[2]}"), html)
    return html


def serve_locally(site_dir: Path, pages: Iterable[Path]) -> None:
    """Rewrite the ``pages`` GX wrote under ``site_dir`` to load the site's own copies (paths relative to each page,
    so the site works from any folder, bucket or host)."""
    for page in pages:
        root = os.path.relpath(site_dir, page.parent).replace(os.sep, "/") + "/"
        html = page.read_text()
        local = served_locally(html, root)
        if local != html:
            page.write_text(local)


def install(site_dir: Path) -> list[Path]:
    """Copy the vendored files into the site (once per job: they do not change while it runs); the files."""
    target = site_dir / SITE_FOLDER
    shutil.copytree(VENDOR, target, dirs_exist_ok=True)
    return [p for p in target.rglob("*") if p.is_file()]
