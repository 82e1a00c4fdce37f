"""Run deploy/nginx/mycert-check.conf locally: for `make run` and the integration tests.

Production installs that file as it is (docs/deploy.md). Here it is adapted to a loopback
port, a self-signed server certificate and the local web process, inside a private nginx
prefix, so that the system's nginx service is never touched.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings

__all__ = ["CHECK_SITE", "check_site", "nginx_binary", "nginx_command", "server_certificate"]

CHECK_SITE = Path(settings.BASE_DIR) / "deploy" / "nginx" / "mycert-check.conf"


def nginx_binary() -> str | None:
    """Debian's nginx, if installed."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if Path(found).exists() else None


def server_certificate(directory: Path, *, now: datetime) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1 and localhost; return (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def check_site(*, port: int, upstream: str, certificate: Path, key: Path) -> str:
    """The shipped self-check server block on 127.0.0.1:``port`` in front of ``upstream``."""
    shipped = CHECK_SITE.read_text()
    https_server, _, _redirect = shipped.rpartition("\nserver {\n    listen 80;")
    replacements = {
        "    listen 443 ssl;\n    # listen [::]:443 ssl;\n": f"    listen 127.0.0.1:{port} ssl;\n",
        "server 127.0.0.1:8000;": f"server {upstream};",
        "/etc/ssl/mycert/check.esante.lu.crt": str(certificate),
        "/etc/ssl/mycert/check.esante.lu.key": str(key),
    }
    for old, new in replacements.items():
        if old not in https_server:
            raise ValueError(f"{CHECK_SITE} no longer contains {old!r}")
        https_server = https_server.replace(old, new)
    return https_server


def nginx_command(prefix: Path, site: str) -> list[str]:
    """Write a private nginx.conf including ``site``; return the foreground command."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site)
    # As root, workers would switch to nobody and lose access to private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"  {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  access_log {prefix}/access.log;\n{temp}  include {prefix}/site.conf;\n}}\n"
    )
    return [
        binary, "-p", str(prefix), "-e", str(prefix / "error.log"),
        "-c", str(prefix / "nginx.conf"), "-g", "daemon off;",
    ]  # fmt: skip
