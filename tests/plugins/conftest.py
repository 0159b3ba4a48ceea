"""Plugin fixtures: the example plugin installed with pip into a temporary site, and hand-made plugin packages."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos.registry import reset_registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "memos-plugin-example"
#: top-level modules the plugin packages of these tests provide; forgotten after each test
PLUGIN_MODULES = ("memos_plugin_example", "memos_test_")


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example plugin as pip installs it (package and dist-info with its entry point)."""
    root = tmp_path_factory.mktemp("example-plugin")
    # installed from a copy: building in place would leave build/ and *.egg-info in the repository
    source = shutil.copytree(EXAMPLE, root / "src")
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [*pip, "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


def _forget_plugin_modules() -> None:
    for name in [m for m in sys.modules if m.startswith(PLUGIN_MODULES)]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test reads the plugins anew, and leaves no registry or plugin module behind."""
    reset_registry()
    _forget_plugin_modules()
    yield
    reset_registry()
    _forget_plugin_modules()


@pytest.fixture
def with_example(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example plugin on sys.path (importlib's caches invalidated, so its entry point is seen)."""
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str, str], Path]:
    """make_plugin(dist name, entry-point name, module source): a one-module plugin package on sys.path.

    The package is laid out as an installer leaves it: the module, and a dist-info folder whose
    entry_points.txt names the module in group memos.plugins. The module is `memos_test_<ep name>`.
    """
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))

    def make(dist: str, entry_point: str, source: str) -> Path:
        module = "memos_test_" + entry_point.replace("-", "_")
        (site / f"{module}.py").write_text(source)
        info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[memos.plugins]\n{entry_point} = {module}\n")
        importlib.invalidate_caches()
        return site

    return make
