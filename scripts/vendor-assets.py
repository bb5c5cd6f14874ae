#!/usr/bin/env python3
"""Fetch the front-end files the maps and the API docs use from the npm registry, into
``quartier/resources/static/``, and record what was fetched in ``ASSETS.json`` there.

Only the files listed in PACKAGES below are kept (no source maps, no unused builds). Each npm
tarball is checked against the registry's ``integrity`` (sha512) by ``npm pack`` itself; the
manifest records it with the sha256 of every kept file, so a later change to a shipped file is
visible (``--check``, which ``tests/test_maps.py`` runs without network).

    scripts/vendor-assets.py           fetch (needs npm and the registry) and rewrite the manifest
    scripts/vendor-assets.py --check   verify the shipped files against the manifest (offline)

To move a package to a new version, change it below, run the script, look at the diff of
``ASSETS.json`` and run the map tests (tests/test_maps.py, tests/test_maps_browser.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "quartier" / "resources" / "static"
MANIFEST = STATIC / "ASSETS.json"

#: npm package -> (pinned version, directory under static/, licence, {file in the tarball:
#: path under that directory}). The licence files are shipped too.
PACKAGES: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "leaflet": (
        "1.9.4",
        "leaflet",
        "BSD-2-Clause",
        {
            "dist/leaflet.js": "leaflet.js",
            "dist/leaflet.css": "leaflet.css",
            "dist/images/layers.png": "images/layers.png",
            "dist/images/layers-2x.png": "images/layers-2x.png",
            "dist/images/marker-icon.png": "images/marker-icon.png",
            "dist/images/marker-icon-2x.png": "images/marker-icon-2x.png",
            "dist/images/marker-shadow.png": "images/marker-shadow.png",
            "LICENSE": "LICENSE",
        },
    ),
    # folium's popups build their content with jQuery (``$(`…`)[0]``); the version folium uses
    "jquery": (
        "3.7.1",
        "jquery",
        "MIT",
        {"dist/jquery.min.js": "jquery.min.js", "LICENSE.txt": "LICENSE.txt"},
    ),
    "leaflet.markercluster": (
        "1.5.3",
        "leaflet.markercluster",
        "MIT",
        {
            "dist/leaflet.markercluster.js": "leaflet.markercluster.js",
            "dist/MarkerCluster.css": "MarkerCluster.css",
            "dist/MarkerCluster.Default.css": "MarkerCluster.Default.css",
            "MIT-LICENCE.txt": "MIT-LICENCE.txt",
        },
    ),
    "swagger-ui-dist": (
        "5.31.0",
        "swagger-ui",
        "Apache-2.0",
        {
            "swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "swagger-ui.css": "swagger-ui.css",
            "favicon-32x32.png": "favicon-32x32.png",
            "LICENSE": "LICENSE",
            "NOTICE": "NOTICE",
            "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-bundle.js.LICENSE.txt",
        },
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch() -> dict[str, object]:
    if shutil.which("npm") is None:
        sys.exit("vendor-assets: npm is needed (Debian: apt-get install npm)")
    manifest: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, (version, *_rest) in PACKAGES.items()]
        out = subprocess.run(
            ["npm", "pack", "--json", "--pack-destination", tmp, *specs],
            check=True, capture_output=True, text=True, cwd=tmp,
        ).stdout  # fmt: skip
        packed = {p["name"]: p for p in json.loads(out)}
        for name, (version, directory, licence, files) in PACKAGES.items():
            info = packed[name]
            if info["version"] != version:
                sys.exit(f"vendor-assets: npm gave {name} {info['version']}, wanted {version}")
            target = STATIC / directory
            shutil.rmtree(target, ignore_errors=True)
            with tarfile.open(Path(tmp) / info["filename"]) as tar:
                for source, dest in files.items():
                    member = tar.extractfile(f"package/{source}")
                    if member is None:
                        sys.exit(f"vendor-assets: {name}@{version} has no {source}")
                    path = target / dest
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(member.read())
            manifest[name] = {
                "version": version,
                "licence": licence,
                "directory": directory,
                "tarball_integrity": info["integrity"],
                "files": {dest: sha256(target / dest) for dest in sorted(files.values())},
            }
    return manifest


def check() -> int:
    manifest = json.loads(MANIFEST.read_text())
    problems = []
    for name, entry in manifest.items():
        for rel, digest in entry["files"].items():
            path = STATIC / entry["directory"] / rel
            if not path.exists():
                problems.append(f"{name}: {rel} missing")
            elif sha256(path) != digest:
                problems.append(f"{name}: {rel} differs from the fetched file")
    for problem in problems:
        print(f"vendor-assets: {problem}", file=sys.stderr)  # noqa: T201
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify, do not fetch (offline)")
    args = parser.parse_args()
    if args.check:
        return check()
    manifest = fetch()
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
    print(f"vendor-assets: {len(manifest)} packages, {size / 1024:.0f} KiB in {STATIC}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
