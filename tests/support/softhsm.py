"""SoftHSM2 tokens for the PKCS#11 tests: a token directory per test session.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the library is initialised, so the variable is
set before the first ``C_Initialize`` in this process (and inherited by children).
Paths are kept short: SoftHSM2 stores objects under the token directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
PIN = "4711-mycert-test"
SO_PIN = "0815-mycert-so"


@dataclass(frozen=True)
class SoftHsm:
    module: str
    conf: Path
    directory: Path
    pin: str = PIN

    def init_token(self, label: str, *, pin: str | None = None) -> str:
        """Create a fresh token ``label`` in a free slot (``pin``: its own); return the label."""
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin or self.pin,
                "--so-pin",
                SO_PIN,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )
        # SoftHSM2 reads its token folder at C_Initialize: a library already loaded in
        # this process sees the new token only after C_Finalize/C_Initialize. Sessions
        # open elsewhere become invalid and are reopened by mycert.pki.token on next use.
        import pkcs11

        loaded = pkcs11._loaded.get(self.module)
        if loaded is not None and loaded.initialized:
            loaded.reinitialize()
        return label


def find_module() -> str | None:
    for candidate in MODULE_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHsm]:
    """A SoftHSM2 configuration in a short temporary folder, for the whole session."""
    module = find_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.fail("SoftHSM2 is required: apt-get install softhsm2 (make system-deps does it)")
    directory = Path(tempfile.mkdtemp(prefix="hsm", dir="/tmp"))
    tokens = directory / "t"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield SoftHsm(module=module, conf=conf, directory=tokens)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
        shutil.rmtree(directory, ignore_errors=True)
