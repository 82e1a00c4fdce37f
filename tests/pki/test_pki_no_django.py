"""mycert.pki stays a pure domain: importing it must not pull Django in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "mycert.pki",
    "mycert.pki.keys",
    "mycert.pki.names",
    "mycert.pki.ca",
    "mycert.pki.profile",
    "mycert.pki.pkcs12",
    "mycert.pki.crl",
    "mycert.pki.ocsp",
    "mycert.pki.token",
    "mycert.pki.ocsp_presigned",
    "mycert.pki.evidence",
    "mycert.pki.revocation_code",
]


def test_every_module_is_covered() -> None:
    package = REPO_ROOT / "mycert" / "pki"
    on_disk = {
        f"mycert.pki.{path.stem}" for path in package.glob("*.py") if not path.stem.startswith("_")
    }
    assert on_disk <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_django(module: str) -> None:
    # A fresh interpreter: the test process itself may already have Django loaded.
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "leaked = sorted(name for name in sys.modules if name.split('.')[0] == 'django')\n"
        "assert not leaked, leaked\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("module", MODULES)
def test_module_declares_all(module: str) -> None:
    imported = __import__(module, fromlist=["__all__"])
    exported = imported.__all__
    assert exported, module
    for name in exported:
        assert hasattr(imported, name), f"{module}.__all__ names missing {name}"
