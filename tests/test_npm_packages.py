"""The fetch of test material from the npm registry (tests/npm_packages.py): a cached tarball is
used only if it is the one whose integrity the test pins."""

from __future__ import annotations

import pytest

from . import npm_packages
from .browser import AXE_INTEGRITY, AXE_PACKAGE, AXE_VERSION


def test_a_cached_tarball_that_is_not_the_registry_s_is_refused_and_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(npm_packages, "CACHE_ROOT", tmp_path)
    cached = tmp_path / f"{AXE_PACKAGE}-{AXE_VERSION}.tgz"
    cached.write_bytes(b"not the package")
    with pytest.raises(RuntimeError, match="is not the registry's"):
        npm_packages.npm_file(AXE_PACKAGE, AXE_VERSION, AXE_INTEGRITY, "axe.min.js")
    assert not cached.exists()  # fetched afresh next time
    assert not (tmp_path / f"{AXE_PACKAGE}-{AXE_VERSION}").exists()
