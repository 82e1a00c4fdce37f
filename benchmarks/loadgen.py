"""Load generation with wrk (C, keep-alive HTTP/1.1), bounded in time and loopback only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "wrk"


def wrk_command(
    url: str, *, script: str, args: list[str], connections: int, seconds: float, threads: int = 1
) -> list[str]:
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"load goes to loopback only, not {url}")
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA / script),
        url,
        "--",
        *args,
    ]


def parse(output: str, connections: int = 1) -> dict[str, Any]:
    """The JSON line our Lua ``done()`` prints, with derived rates."""
    line = next(line for line in reversed(output.splitlines()) if line.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    seconds = result["duration_us"] / 1e6
    errors = sum(result["errors"].values())
    result["seconds"] = seconds
    result["rps"] = result["requests"] / seconds
    result["ok_rps"] = (result["requests"] - result["errors"]["status"]) / seconds
    # A run stopped early by its request limit still reports the whole duration; in a
    # closed loop, throughput = connections ÷ mean latency (Little's law) holds anyway.
    if result["mean_us"] > 0:
        result["little_rps"] = connections / (result["mean_us"] / 1e6)
    result["error_count"] = errors
    for key in ("p50", "p90", "p95", "p99"):
        result[f"{key}_ms"] = result[f"{key}_us"] / 1000
    return result


def wrk(url: str, **kwargs: Any) -> dict[str, Any]:
    command = wrk_command(url, **kwargs)
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=kwargs["seconds"] + 60
    )
    return parse(completed.stdout, kwargs["connections"])


def h2load_command(
    url: str, *, body: Path, content_type: str, requests: int, connections: int, log: Path
) -> list[str]:
    """h2load over HTTP/1.1 keep-alive, one POST body, a fixed number of requests.

    Used for OCSP: unlike wrk, h2load never opens a connection it does not use (wrk
    checks the address with a bare connect first, which sends ``openssl ocsp`` into its
    spin and starves every later connection).
    """
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"load goes to loopback only, not {url}")
    return [
        "h2load", "--h1", "-t", "1", "-c", str(connections), "-n", str(requests),
        "-d", str(body), "-H", f"Content-Type: {content_type}", "--log-file", str(log), url,
    ]  # fmt: skip


def parse_h2load(output: str, log: Path) -> dict[str, Any]:
    import re

    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", output)  # fmt: skip
    if not (finished and codes and done):
        raise RuntimeError(f"unexpected h2load output: {output[-800:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok = int(codes.group(1))
    durations = sorted(
        int(line.split("\t")[2]) / 1000
        for line in log.read_text().splitlines()
        if line.count("\t") >= 2 and line.split("\t")[1] == "200"
    )

    def pct(q: float) -> float:
        if not durations:
            return float("nan")
        return durations[min(len(durations) - 1, max(0, round(q / 100 * len(durations)) - 1))]

    return {
        "requests": int(done.group(1)),
        "ok": ok,
        "failed": int(done.group(5)) + int(done.group(6)) + int(done.group(7)),
        "non_2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)),
        "seconds": seconds,
        "ok_rps": ok / seconds,
        "error_count": int(done.group(1)) - ok,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": durations[-1] if durations else float("nan"),
    }


def h2load(url: str, **kwargs: Any) -> dict[str, Any]:
    command = h2load_command(url, **kwargs)
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    return parse_h2load(completed.stdout, kwargs["log"])
