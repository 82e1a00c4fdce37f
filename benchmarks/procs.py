"""The real processes the benchmarks drive: SMTP sink, Celery workers, gunicorn.

Each is started with the benchmark's environment, logs to a file under the run's
folder, and is stopped by its own pid (never by name).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.env import BASE_DIR, BenchEnv


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _stop(process: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Its own children (a prefork pool) first, by parent pid; then itself.
        subprocess.run(["pkill", "-KILL", "-P", str(process.pid)], check=False)
        process.kill()
        process.wait()


@dataclass
class Sink:
    """``python -m mycert.mail.sink`` writing a Maildir: what the relay accepted."""

    env: BenchEnv
    maildir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.env.root / "sink.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mycert.mail.sink",
                "--port",
                str(self.env.sink_port),
                "--maildir",
                str(self.maildir),
                "--quiet",
            ],
            cwd=BASE_DIR,
            env=self.env.child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: _listening(self.env.sink_port), timeout=15, what="the SMTP sink")

    def accepted(self) -> int:
        """Messages the sink has accepted (Maildir files move to new/ once written)."""
        try:
            return sum(1 for _ in os.scandir(self.maildir / "new"))
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@dataclass
class Workers:
    """Celery workers on the benchmark's Redis db."""

    env: BenchEnv
    count: int = 2
    concurrency: int = 1
    pool: str = "solo"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return f"{self.count} × celery worker --pool {self.pool} --concurrency {self.concurrency}"

    def start(self) -> None:
        from config.celery import app

        # No -Q, as deployed (docs/deploy.md): each reads every queue, the revocation's too.
        for index in range(self.count):
            log = (self.env.root / f"worker-{index}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "config",
                        "worker",
                        "--loglevel",
                        "WARNING",
                        "--pool",
                        self.pool,
                        "--concurrency",
                        str(self.concurrency),
                        "--hostname",
                        f"b{index}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    cwd=BASE_DIR,
                    env=self.env.child_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()

        def all_ready() -> bool:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a worker exited; see {self.env.root}/worker-*.log")
            return len(app.control.ping(timeout=0.5) or []) >= self.count

        wait_until(all_ready, timeout=60, what="the Celery workers")

    def stop(self) -> None:
        for process in self.processes:
            _stop(process, timeout=30)
        self.processes.clear()


@dataclass
class Gunicorn:
    """MyCert's WSGI application under gunicorn on a loopback port."""

    env: BenchEnv
    workers: int = 2
    threads: int = 4
    worker_class: str = "gthread"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        if self.worker_class == "gthread":
            return f"gunicorn -w {self.workers} -k gthread --threads {self.threads}"
        return f"gunicorn -w {self.workers} -k {self.worker_class}"

    def start(self) -> None:
        log = (self.env.root / "gunicorn.log").open("ab")
        command = [sys.executable, "-m", "gunicorn", "config.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.env.web_port}", "--workers", str(self.workers)]
        command += ["--worker-class", self.worker_class, "--log-level", "warning"]
        if self.worker_class == "gthread":
            command += ["--threads", str(self.threads), "--keep-alive", "10"]
        self.process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=self.env.child_env(**self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.env.root}/gunicorn.log")
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", self.env.web_port, timeout=2)
                connection.request("GET", "/pki/ca/issuing.cer")
                ok = connection.getresponse().status == 200
                connection.close()
                return ok
            return False

        wait_until(answers, timeout=30, what="gunicorn")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid``, user + system (proc(5) stat)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(fields[i]) / _CLOCK_TICKS for i in (11, 12, 13, 14))
    return utime + stime, cutime + cstime


def cpu_seconds_named(name: str) -> float:
    """CPU seconds of every process named ``name`` (e.g. ``postgres``), and of its exited
    children: a backend that closed is counted in its reaper, the postmaster."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as comm:
                if comm.read().strip() != name:
                    continue
        except OSError:
            continue
        total += sum(cpu_seconds(int(entry.name)))
    return total
