"""Third-party test material fetched from the npm registry at test time rather than committed (too
big to vendor, or under a licence we would rather not copy into the repository): `npm pack` into a
cache directory outside git, checked against the registry's sha512 integrity pinned in the test.

Nothing is skipped: without npm or the registry, `npm_tarball` raises and the test fails saying so.
To run offline, pre-fill the cache directory (e.g. from a CI cache) with the same tarballs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("SIDEP_EXAMPLES_CACHE") or Path.home() / ".cache" / "sidep-fhir-tests")


def sha512_integrity(data: bytes) -> str:
    """The registry's `dist.integrity` form (Subresource Integrity: sha512-<base64>)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def npm_tarball(package: str, version: str, integrity: str) -> Path:
    """The package's tarball, fetched with npm once and checked against `integrity` at every use."""
    tarball = CACHE_ROOT / f"{package.replace('/', '-')}-{version}.tgz"
    if not tarball.exists():
        _pack(package, version, tarball)
    digest = sha512_integrity(tarball.read_bytes())
    if digest != integrity:
        tarball.unlink()
        raise RuntimeError(f"{tarball}: integrity {digest} is not the registry's {integrity}")
    return tarball


def npm_file(package: str, version: str, integrity: str, member: str) -> Path:
    """One file of the package (`member`: its path inside the package, e.g. "axe.min.js"), unpacked
    once into the cache next to the tarball."""
    target = CACHE_ROOT / f"{package.replace('/', '-')}-{version}" / member
    if target.exists():
        return target
    with tarfile.open(npm_tarball(package, version, integrity)) as tar:
        data = tar.extractfile(f"package/{member}").read()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkstemp(prefix="unpack-", dir=target.parent)[1])
    work.write_bytes(data)
    work.replace(target)  # atomic: parallel workers may race here
    return target


def _pack(package: str, version: str, tarball: Path) -> None:
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed to fetch {package}@{version} (Debian: apt-get install npm)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="npm-", dir=CACHE_ROOT))
    try:
        done = subprocess.run(
            ["npm", "pack", f"{package}@{version}", "--pack-destination", str(work)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm pack {package}@{version} failed: {done.stderr[-2000:]}")
        packed = next(work.glob("*.tgz"))  # npm names it after the package (scopes flattened)
        packed.replace(tarball)  # atomic: parallel workers may race here
    finally:
        shutil.rmtree(work, ignore_errors=True)
