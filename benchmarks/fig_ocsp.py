"""Figure 3: OCSP responses per second and latency, MyCert under gunicorn against openssl.

Both answer POSTed requests (SHA-1 CertID and a nonce, as ``openssl ocsp`` and most
clients send them) for the same 256 certificates, a tenth of them revoked, with the same
delegated EC P-256 responder certificate and key, signing with SHA-256, valid 1 h.

- MyCert: ``/pki/ocsp/`` under gunicorn (2 sync worker processes, as many as cores;
  a new connection per request, which measured faster here than threaded workers
  with keep-alive), serving the answers workers signed ahead and stored in PostgreSQL
  (one query, no signature, no nonce echoed: RFC 5019), from a web process started
  without any CA passphrase or outbox key;
- openssl: ``openssl ocsp -index … -port … -rsigner … -rkey … -CA …`` with an index.txt
  of the same certificates. It has no bind address (``-port`` takes a number and binds
  every interface), so it runs in a network namespace of its own whose only interface
  is loopback, with the load generator beside it; it is probed with a real OCSP request,
  never a bare TCP connect (after which it spins). One process, as it is by default.

Then revocation → OCSP "revoked": a Celery worker signs each revoked answer once the
revocation commits; the time from the revoking transaction's commit to the first
"revoked" answer at gunicorn, revocation after revocation.

Load: h2load over HTTP/1.1 keep-alive (one thread, the same connections and the same
request for both), as many requests as the server answers in the run's duration
(calibrated by a warm-up run); it shares the 2 cores with the server in both cases.
wrk is not usable here: it opens a bare connection first, which stalls openssl.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Figure, median
from benchmarks.loadgen import h2load, h2load_command, parse_h2load
from benchmarks.procs import Gunicorn

CERTIFICATES = 256
OPENSSL_PORT = 8889
REVOCATIONS = 20
GOAL_RPS = 5_000
GOAL_P99_MS = 5.0
GOAL_REVOCATION_MS = 1_000
WEB_HOST_ENV = {"MYCERT_CA_KEY_PASSPHRASE": "", "MYCERT_OUTBOX_KEY": ""}


def _certificates(ctx: Context, count: int) -> list[tuple[Any, bool]]:
    """Issue ``count`` EC certificates through MyCert; revoke every tenth in the database."""
    from cryptography import x509
    from django.utils import timezone

    from benchmarks.fig_pipeline import _requests
    from mycert.models import Certificate
    from mycert.services.issuance import request_issue
    from mycert.services.ocsp import ocsp_responses_sign

    certificates = []
    for index, request_id in enumerate(_requests(count, "ec-p256", None)):
        outcome = request_issue(request_id=request_id, now=timezone.now())
        assert outcome.certificate_id is not None  # noqa: S101 - a fresh request is issued
        record = Certificate.objects.get(pk=outcome.certificate_id)
        revoked = index % 10 == 9
        if revoked:
            Certificate.objects.filter(pk=record.pk).update(
                revoked_at=timezone.now().replace(microsecond=0) - timedelta(hours=1),
                revocation_reason="keyCompromise",
            )
        certificates.append((x509.load_pem_x509_certificate(record.pem.encode()), revoked))
        if revoked:  # its revoked answer, as the worker signs it after a revocation
            ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now())
    return certificates


def _requests_file(folder: Path, certificates, issuer) -> Path:
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    lines = []
    for certificate, _revoked in certificates:
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303 - CertID as sent
            .add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
            .build()
        )
        lines.append(request.public_bytes(serialization.Encoding.DER).hex())
    path = folder / "ocsp-requests.hex"
    path.write_text("\n".join(lines) + "\n")
    return path


def _check_mycert(ctx: Context, certificates, issuer) -> None:
    """One answer per status, read back with pyca, before any timing."""
    import http.client

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    for certificate, revoked in (certificates[0], certificates[9]):
        body = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        connection = http.client.HTTPConnection("127.0.0.1", ctx.env.web_port, timeout=10)
        connection.request("POST", "/pki/ocsp/", body, {"Content-Type": "application/ocsp-request"})
        response = ocsp.load_der_ocsp_response(connection.getresponse().read())
        connection.close()
        expected = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL or (
            response.certificate_status != expected
        ):
            raise RuntimeError(f"MyCert's OCSP answer is wrong: {response.response_status}")


def _openssl_files(ctx: Context, folder: Path, certificates) -> dict[str, Path]:
    from datetime import UTC

    from cryptography.hazmat.primitives import serialization

    from mycert import ca_store

    responder = ca_store.load_ocsp_responder()
    ca = ca_store.load_ca_certificates()
    files = {
        "rsigner": folder / "ocsp.pem",
        "rkey": folder / "ocsp-key.pem",
        "ca": folder / "issuing.pem",
        "index": folder / "index.txt",
    }
    files["rsigner"].write_bytes(responder.certificate.public_bytes(serialization.Encoding.PEM))
    files["rkey"].touch(mode=0o600)
    files["rkey"].write_bytes(
        responder.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files["ca"].write_bytes(ca.issuing.public_bytes(serialization.Encoding.PEM))
    lines = []
    revoked_at = "{:%y%m%d%H%M%S}Z"
    for certificate, revoked in certificates:
        expiry = certificate.not_valid_after_utc.astimezone(UTC).strftime("%y%m%d%H%M%SZ")
        serial = format(certificate.serial_number, "X")
        serial = "0" * (len(serial) % 2) + serial
        subject = "/" + "/".join(
            a.rfc4514_string().replace("/", "\\/") for a in certificate.subject
        )
        if revoked:
            when = revoked_at.format(certificate.not_valid_before_utc + timedelta(minutes=30))
            lines.append(f"R\t{expiry}\t{when},keyCompromise\t{serial}\tunknown\t{subject}\n")
        else:
            lines.append(f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n")
    files["index"].write_text("".join(lines))
    return files


def _openssl_runs(
    folder: Path,
    files: dict[str, Path],
    body: Path,
    first_serial: int,
    *,
    runs: int,
    seconds: float,
    connections: int,
) -> list[dict[str, Any]]:
    """Run openssl ocsp and h2load in a private network namespace (loopback only)."""
    import shlex

    url = f"http://127.0.0.1:{OPENSSL_PORT}/"
    responder = [
        "openssl", "ocsp", "-index", str(files["index"]), "-port", str(OPENSSL_PORT),
        "-rsigner", str(files["rsigner"]), "-rkey", str(files["rkey"]), "-CA", str(files["ca"]),
        "-rmd", "sha256", "-nmin", "60",
    ]  # fmt: skip
    probe = [
        "openssl", "ocsp", "-issuer", str(files["ca"]), "-serial", f"0x{first_serial:X}",
        "-url", url, "-noverify", "-timeout", "2",
    ]  # fmt: skip

    def load(requests: str, name: str) -> str:
        command = h2load_command(
            url,
            body=body,
            content_type="application/ocsp-request",
            requests=1,
            connections=connections,
            log=folder / f"{name}.log",
        )
        command[command.index("-n") + 1] = "__N__"
        return shlex.join(command).replace("__N__", requests) + f" > {folder}/{name}.out 2>&1"

    loads = "\n".join(load('"$n"', f"openssl-run-{run}") for run in range(1, runs + 1))
    script = f"""set -u
ip link set lo up
{shlex.join(responder)} > {folder}/openssl-responder.log 2>&1 &
responder=$!
ready=no
for attempt in $(seq 1 100); do
  if {shlex.join(probe)} > {folder}/openssl-probe.out 2>&1; then ready=yes; break; fi
  sleep 0.1
done
if [ "$ready" = yes ]; then
{load("2000", "openssl-warmup")}
rate=$(awk '/req\\/s/ {{print int($4); exit}}' {folder}/openssl-warmup.out)
n=$(( ${{rate:-1000}} * {round(seconds)} ))
{loads}
fi
kill "$responder" 2>/dev/null; wait "$responder" 2>/dev/null
echo "ready=$ready"
"""
    completed = subprocess.run(
        ["unshare", "--net", "--", "bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=(runs + 1) * (seconds + 60) + 60,
    )
    if "ready=yes" not in completed.stdout:
        raise RuntimeError(
            f"openssl ocsp did not answer: {completed.stdout} {completed.stderr}"
            f" {(folder / 'openssl-probe.out').read_text(errors='replace')}"
        )
    probe_text = (folder / "openssl-probe.out").read_text(errors="replace")
    if "good" not in probe_text and "revoked" not in probe_text:
        raise RuntimeError(f"openssl ocsp answered oddly: {probe_text}")
    return [
        parse_h2load(
            (folder / f"openssl-run-{run}.out").read_text(), folder / f"openssl-run-{run}.log"
        )
        for run in range(1, runs + 1)
    ]


def run(
    ctx: Context, runs: int, seconds: float, *, server: Gunicorn | None = None
) -> dict[str, Any]:
    from mycert import ca_store

    folder = ctx.env.root / "ocsp"
    folder.mkdir(exist_ok=True)
    ctx.say(f"OCSP: issuing {CERTIFICATES} certificates to ask about")
    certificates = _certificates(ctx, CERTIFICATES)
    issuer = ca_store.load_ca_certificates().issuing
    bodies = _requests_file(folder, certificates, issuer)
    body = folder / "ocsp-request.der"
    body.write_bytes(bytes.fromhex(bodies.read_text().split()[0]))

    # The web host holds no secret (DESIGN.md §8): no CA passphrase, no outbox key.
    server = server or Gunicorn(ctx.env, workers=2, worker_class="sync", extra_env=WEB_HOST_ENV)
    connections = 8
    server.start()
    try:
        _check_mycert(ctx, certificates, issuer)
        url = f"{ctx.env.base_url}/pki/ocsp/"
        ctx.say(f"OCSP: MyCert ({server.description}), {runs} × {seconds:.0f} s")

        def mycert_load(requests: int, name: str) -> dict[str, Any]:
            return h2load(
                url,
                body=body,
                content_type="application/ocsp-request",
                requests=requests,
                connections=connections,
                log=folder / f"{name}.log",
            )

        warmup = mycert_load(1000, "mycert-warmup")
        count = max(1000, round(warmup["ok_rps"] * seconds))
        mycert_runs = [mycert_load(count, f"mycert-run-{run}") for run in range(runs)]
        ctx.say(f"OCSP: revocation → revoked answer, {REVOCATIONS} revocations, 1 worker")
        latencies = _revocation_latencies(ctx, REVOCATIONS)
    finally:
        server.stop()
    ctx.say(f"OCSP: openssl ocsp (1 process), {runs} × {seconds:.0f} s")
    files = _openssl_files(ctx, folder, certificates)
    openssl_runs = _openssl_runs(
        folder,
        files,
        body,
        certificates[0][0].serial_number,
        runs=runs,
        seconds=seconds,
        connections=connections,
    )
    result = {
        "mycert": mycert_runs,
        "openssl": openssl_runs,
        "server": server.description,
        "connections": connections,
        "revocation_latencies_ms": [latency * 1000 for latency in latencies],
    }
    mycert_rps = median([r["ok_rps"] for r in mycert_runs])
    openssl_rps = median([r["ok_rps"] for r in openssl_runs])
    ratio = mycert_rps / openssl_rps
    errors = sum(r["error_count"] for r in mycert_runs)
    ctx.add(
        Figure(
            key="ocsp.throughput",
            title="OCSP responses per second (POST, loopback)",
            value=mycert_rps,
            unit="responses/s",
            reference=openssl_rps,
            reference_label="openssl ocsp -index … -port (one process)",
            ratio=ratio,
            goal=f"≥ {GOAL_RPS:,}/s (3× the 1,690/s of answers signed per request)",
            met=mycert_rps >= GOAL_RPS and errors == 0,
            runs=runs,
            notes=(
                f"{server.description}, stored answers, web without keys; "
                f"h2load --h1 -t1 -c{connections} for both; "
                f"errors MyCert {errors}, openssl "
                f"{sum(r['error_count'] for r in openssl_runs)}"
            ),
            details={"goal_index": GOAL_RPS / mycert_rps},
        )
    )
    for q in ("p50", "p99"):
        value = median([r[f"{q}_ms"] for r in mycert_runs])
        reference = median([r[f"{q}_ms"] for r in openssl_runs])
        ctx.add(
            Figure(
                key=f"ocsp.latency.{q}",
                title=f"OCSP latency {q} under load",
                value=value,
                unit="ms",
                reference=reference,
                reference_label="openssl ocsp, same load generator",
                ratio=value / reference,
                goal=f"≤ {GOAL_P99_MS:g} ms" if q == "p99" else "—",
                met=value <= GOAL_P99_MS if q == "p99" else None,
                runs=runs,
                notes=f"closed loop, {connections} keep-alive connections for both",
                details={"goal_index": value / GOAL_P99_MS} if q == "p99" else {},
            )
        )
    steady = sorted(latencies)
    p95 = steady[max(0, round(0.95 * len(steady)) - 1)]
    ctx.add(
        Figure(
            key="ocsp.revocation.p95",
            title="Revocation committed → OCSP answers revoked, p95",
            value=p95 * 1000,
            unit="ms",
            reference=GOAL_REVOCATION_MS,
            reference_label="the goal",
            ratio=p95 * 1000 / GOAL_REVOCATION_MS,
            goal=f"≤ {GOAL_REVOCATION_MS:,} ms",
            met=p95 * 1000 <= GOAL_REVOCATION_MS,
            runs=len(steady),
            notes=(
                f"p50 {steady[len(steady) // 2] * 1000:.0f} ms, max {steady[-1] * 1000:.0f} ms; "
                "1 celery worker --pool solo; tryLater until the answer is stored, never good"
            ),
            details={"goal_index": p95 * 1000 / GOAL_REVOCATION_MS},
        )
    )
    return result


def _revocation_latencies(ctx: Context, count: int) -> list[float]:
    """Revoke ``count`` fresh certificates one by one; time commit → "revoked" at gunicorn."""
    import http.client
    import time

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    from django.utils import timezone

    from benchmarks.procs import Workers
    from mycert import ca_store
    from mycert.models import Certificate
    from mycert.services.revocation import certificate_revoke

    issuer = ca_store.load_ca_certificates().issuing
    fresh = [c for c, revoked in _certificates(ctx, count + 1) if not revoked]
    workers = Workers(ctx.env, count=1, concurrency=1, pool="solo")
    workers.start()
    latencies = []
    try:
        for index, certificate in enumerate(fresh[: count + 1]):
            body = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303 - CertID
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            record = Certificate.objects.get(serial=format(certificate.serial_number, "x"))
            certificate_revoke(
                certificate_id=record.pk,
                reason="keyCompromise",
                via="helpdesk",
                actor=None,
                now=timezone.now(),
            )
            committed = time.perf_counter()
            while True:
                connection = http.client.HTTPConnection("127.0.0.1", ctx.env.web_port, timeout=10)
                connection.request(
                    "POST", "/pki/ocsp/", body, {"Content-Type": "application/ocsp-request"}
                )
                answer = ocsp.load_der_ocsp_response(connection.getresponse().read())
                connection.close()
                if answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL:
                    if answer.certificate_status == ocsp.OCSPCertStatus.GOOD:
                        raise RuntimeError("OCSP answered good after a committed revocation")
                    if answer.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                        break
                if time.perf_counter() - committed > 30:
                    raise RuntimeError("OCSP did not say revoked within 30 s")
                time.sleep(0.005)
            if index:  # the first waits for the worker's first task (imports, key load)
                latencies.append(time.perf_counter() - committed)
    finally:
        workers.stop()
    return latencies
