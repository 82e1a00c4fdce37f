"""Helpers for the PKI tests: external commands, PEM files, pkilint reports."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mycert.pki import KeyType, PrivateKey

ORGANIZATION = "Agence eSanté Luxembourg"
PKI_BASE = "http://pki.example.lu"


@dataclass(frozen=True)
class Leaf:
    """A professional's key and certificate, as the issuance service would hold them."""

    key_type: KeyType
    private_key: PrivateKey
    certificate: x509.Certificate
    pem_path: Path


def run_command(args: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    """Run a command, return its result; fail the test with its output if it fails."""
    completed = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        # Tools print names in their own encodings (OpenSSL 3.0 prints BMPString
        # friendly names as Latin-1): keep the bytes recoverable instead of failing.
        encoding="utf-8",
        errors="surrogateescape",
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {completed.returncode}\n"
            f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
        )
    return completed


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    """Write certificates as PEM to ``path`` and return it."""
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def pkilint_findings(tool: str, extra: Sequence[str], document: Path) -> list[dict[str, str]]:
    """Run a pkilint command on ``document`` and return every finding, any severity.

    The command's own ``main`` runs in this process, with the arguments and the JSON
    report of its command line: the same lint without a Python start-up each time.
    """
    command = importlib.import_module(f"pkilint.bin.{tool}")
    stdout, stderr = io.StringIO(), io.StringIO()
    # The document comes on standard input ("-"): pkilint leaves a file it opened itself
    # unclosed, which only a process's exit would tidy away.
    stdin = sys.stdin
    content = io.BytesIO(document.read_bytes())
    content.name = str(document)  # pkilint names the document in its report
    sys.stdin = io.TextIOWrapper(content)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            command.main(["lint", *extra, "-s", "ALL", "-f", "JSON", "-"])
    finally:
        sys.stdin = stdin
    # pkilint's exit status counts findings at or above the threshold; the JSON on
    # stdout is what we judge, so only a missing report fails here.
    if not stdout.getvalue().strip():
        pytest.fail(f"{tool} produced no report:\n{stderr.getvalue()}")
    report = json.loads(stdout.getvalue())
    return [
        {"validator": result["validator"], "node": result["node_path"], **finding}
        for result in report["results"]
        for finding in result["finding_descriptions"]
    ]
