"""The package and the examples type-check clean (mypy, configured in pyproject.toml), and the
package says it is typed (py.typed), so that an app's own type checker reads loopcpp's types."""

import subprocess
import sys
from pathlib import Path

import pytest

import loopcpp

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_ships_py_typed():
    assert (Path(loopcpp.__file__).parent / "py.typed").is_file()


def test_mypy_is_clean_on_the_package_and_the_examples(tmp_path):
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "loopcpp",
                        *map(str, (ROOT / "examples").glob("*.py"))],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
