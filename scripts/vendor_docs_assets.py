"""Fetch the Data Docs pages' scripts, style sheets and fonts from npm into the job's package (``make docs-assets``).

GX's pages load jQuery, Bootstrap, bootstrap-table, Font Awesome and Vega from CDNs: a site opened offline, from
``file://`` or from a private bucket, shows an empty index and no status icons. The files listed in
``libs/sales_cdc/quality/static/vendor.json`` are fetched here at their pinned versions (``npm pack``), with each
package's licence, into ``static/vendor/<package>/``; ``static/vendor/MANIFEST.json`` records the versions, licences
and sha256 of what was written. The job copies that folder into every site and points the pages at it
(``sales_cdc.quality.assets``). Run it again only to change a version.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "libs" / "sales_cdc" / "quality" / "static"
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md")


def package_dir(spec: str) -> str:
    """``@scope/name@1.2.3`` -> ``name``: the folder the package's files go to."""
    return spec.rsplit("@", 1)[0].split("/")[-1]


def fetch(spec: str, work: Path) -> Path:
    """The unpacked npm package ``spec`` (its ``package/`` folder)."""
    packed = subprocess.run(["npm", "pack", "--silent", spec, "--pack-destination", str(work)], check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    target = work / package_dir(spec)
    with tarfile.open(work / packed) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def main() -> int:
    config = json.loads((STATIC / "vendor.json").read_text())
    vendor = STATIC / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    manifest = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in config["packages"]:
            package = fetch(entry["npm"], Path(tmp))
            meta = json.loads((package / "package.json").read_text())
            destination = vendor / package_dir(entry["npm"])
            files = {}
            for name in entry["files"]:
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(package / name, target)
                files[name] = hashlib.sha256(target.read_bytes()).hexdigest()
            licence = next((package / f for f in LICENCE_FILES if (package / f).exists()), None)
            if licence is not None:
                shutil.copyfile(licence, destination / licence.name)
            manifest.append({"npm": entry["npm"], "version": meta["version"], "license": meta.get("license"),
                             "files": files})
            print(f"{entry['npm']}: {len(files)} file(s), {meta.get('license')}")
    (vendor / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
