"""Real nginx and Apache httpd (Debian's), run as this test's own processes.

Each server gets a prefix folder under the test's tmp_path, a free loopback port and a
self-signed server certificate; the system services are never touched. ``reload`` is the
operator's graceful reload (nginx ``-s reload``, Apache ``-k graceful``): what a relying
service does after fetching a new CRL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mycert.ops import selfcheck_nginx

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; return (cert, key) paths."""
    return selfcheck_nginx.server_certificate(directory, now=datetime.now(UTC))


class Nginx:
    """One nginx master (and worker) with ``site`` included in its http block."""

    def __init__(self, prefix: Path) -> None:
        if not Path(NGINX).exists():
            pytest.fail("nginx is missing: apt-get install nginx (make tls-test-deps)")
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.log = prefix / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, site: str, port: int) -> None:
        command = selfcheck_nginx.nginx_command(self.prefix, site)
        subprocess.run([*command[:-2], "-t", "-q"], check=True, capture_output=True, timeout=30)
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for_port(port, process=self.process, log=self.log)

    def reload(self) -> None:
        """Re-read configuration and files (CRL included) as ``nginx -s reload`` does."""
        assert self.process is not None
        before = _worker_pids(self.process.pid)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        # Done when the old worker has gone and a new one serves.
        while time.monotonic() < deadline:
            now = _worker_pids(self.process.pid)
            if now and not (now & before):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not reload: {_tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _worker_pids(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    try:
        return {int(p) for p in children.read_text().split()}
    except OSError:
        return set()


class Apache:
    """One Apache httpd (Debian's binary, our own minimal configuration), prefork MPM."""

    def __init__(self, prefix: Path) -> None:
        if not Path(APACHE).exists():
            pytest.fail("apache2 is missing: apt-get install apache2 (make tls-test-deps)")
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "httpd.conf"
        self.log = prefix / "error.log"
        self.pid = prefix / "httpd.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, site: str) -> None:
        modules = "".join(
            f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so\n"
            for name in ("mpm_prefork", "authz_core", "ssl", "socache_shmcb", "alias", "headers")
        )
        # As root, Apache refuses to serve as root: its children run as nobody (the test
        # makes the files they read world-readable).
        user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"ServerRoot {self.prefix}\n{modules}{user}"
            f"PidFile {self.pid}\nErrorLog {self.log}\nLogLevel info ssl:info\n"
            f"Mutex file:{self.prefix} default\nServerName 127.0.0.1\n"
            f"StartServers 1\nMinSpareServers 1\nMaxSpareServers 2\n"
            f"SSLSessionCache shmcb:{self.prefix}/ssl_scache(512000)\n"
            f"Include {self.prefix}/site.conf\n"
        )
        (self.prefix / "site.conf").write_text(site)

    def _command(self, *extra: str) -> list[str]:
        # Debian's apache2 binary wants APACHE_RUN_DIR and friends only through apache2ctl;
        # with an explicit -f it needs none of them.
        return [APACHE, "-f", str(self.conf), *extra]

    def start(self, site: str, port: int) -> None:
        self.write(site)
        check = subprocess.run(self._command("-t"), capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(check.stderr.decode(errors="replace"))
        # -DFOREGROUND keeps the parent in the foreground (our child), with its workers.
        # Its own session: prefork signals its whole process group when it stops, which
        # would otherwise be pytest's.
        self.process = subprocess.Popen(
            self._command("-DFOREGROUND"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(port, process=self.process, log=self.log)

    def reload(self) -> None:
        """Graceful restart (``apachectl graceful``): new children read the new CRL."""
        assert self.process is not None
        generation = self.log.read_text(errors="replace").count("resuming normal operations")
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if text.count("resuming normal operations") > generation:
                return
            time.sleep(0.05)
        raise RuntimeError(f"apache did not reload: {_tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


check_site = selfcheck_nginx.check_site
