"""The kit's Python server checks OCSP itself (deploy/python/mycert_relying_party.py):
it must refuse what a careful client refuses — a forged, foreign, stale or mismatched
answer — keep nothing it could not verify, and keep a good answer 30 s at most."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from django.utils import timezone

from mycert import custody
from mycert.pki import CertificateStatus, StatusAnswer
from mycert.pki.ocsp_presigned import sign_ca_status_responses, sign_presigned_response

KIT = Path(__file__).resolve().parents[1] / "deploy" / "python" / "mycert_relying_party.py"


@pytest.fixture(scope="module")
def kit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mycert_relying_party", KIT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Answerer = Callable[[ocsp.OCSPRequest], bytes]


@pytest.fixture
def responder(offline_root: Path) -> Iterator[tuple[str, list[Answerer], list[int]]]:
    """A responder whose answer on the leaf the test chooses; the root answers on the CA."""
    answer_leaf: list[Answerer] = []
    asked: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ocsp.load_der_ocsp_request(body)
            asked.append(request.serial_number)
            der = (
                _root_answer(request.serial_number)
                if request.serial_number == custody.ca_certificates_load().issuing.serial_number
                else answer_leaf[0](request)
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(der)))
            self.end_headers()
            self.wfile.write(der)

        def log_message(self, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pki/ocsp/", answer_leaf, asked
    finally:
        server.shutdown()
        server.server_close()


def _root_answer(serial: int) -> bytes:
    root = custody.root_load()
    now = timezone.now().replace(microsecond=0)
    return sign_ca_status_responses(
        root=root,
        serial_number=serial,
        answer=StatusAnswer(CertificateStatus.GOOD),
        this_update=now,
        next_update=now + timedelta(days=1),
    )["sha1"]


def _leaf() -> x509.Certificate:
    issuing = custody.ca_load().issuing
    key = ec.generate_private_key(ec.SECP256R1())
    now = timezone.now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Marie Dupont")]))
        .issuer_name(issuing.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(issuing.private_key, hashes.SHA256())
    )


def _mycert(
    status: CertificateStatus = CertificateStatus.GOOD, *, serial_delta: int = 0
) -> Answerer:
    def answer(request: ocsp.OCSPRequest) -> bytes:
        now = timezone.now().replace(microsecond=0)
        revoked = status is CertificateStatus.REVOKED
        return sign_presigned_response(
            serial_number=request.serial_number + serial_delta,
            issuer_certificate=custody.ca_certificates_load().issuing,
            responder=custody.ocsp_responder_load(),
            answer=StatusAnswer(status, revoked_at=now if revoked else None),
            hash_name="sha1",
            this_update=now,
            next_update=now + timedelta(hours=4),
        )

    return answer


def _forged(request: ocsp.OCSPRequest) -> bytes:
    """ "good", signed by a key of its own with a responder certificate it made itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuing = custody.ca_certificates_load().issuing
    now = timezone.now()
    impostor = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP")]))
        .issuer_name(issuing.subject)  # claims the issuing CA, is not signed by it
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=hashes.SHA1(),  # noqa: S303 - CertID
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, impostor)
        .certificates([impostor])
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def _stale(request: ocsp.OCSPRequest) -> bytes:
    """MyCert's own responder, an answer past its nextUpdate (a replayed old one)."""
    responder = custody.ocsp_responder_load()
    now = timezone.now()
    return (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=hashes.SHA1(),  # noqa: S303 - CertID
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now - timedelta(hours=5),
            next_update=now - timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
        .sign(responder.private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def _try_later(request: ocsp.OCSPRequest) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.TRY_LATER
    ).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def checker(kit: ModuleType, ca: custody.CaPaths, responder: Any, tmp_path: Path) -> Any:
    url, _, _ = responder
    ca_file = tmp_path / "mycert-ca.pem"
    ca_file.write_bytes(ca.root_cert.read_bytes() + ca.issuing_cert.read_bytes())
    return kit.OcspChecker(str(ca_file), responder=url, cache_seconds=30, timeout=5)


def _refusal(checker: Any, leaf: x509.Certificate) -> str | None:
    refusal: str | None = checker.refusal(leaf.public_bytes(serialization.Encoding.DER))
    return refusal


def test_good_for_the_whole_chain_is_accepted_and_kept_30_s(checker: Any, responder: Any) -> None:
    _, answer_leaf, asked = responder
    answer_leaf.append(_mycert())
    leaf = _leaf()
    assert _refusal(checker, leaf) is None
    issuing = custody.ca_certificates_load().issuing
    assert asked == [leaf.serial_number, issuing.serial_number]  # the whole chain
    assert _refusal(checker, leaf) is None
    assert len(asked) == 2  # from the cache
    checker.cache_seconds = 0  # past the cache's life, it asks again
    checker.cache.clear()
    assert _refusal(checker, leaf) is None
    assert len(asked) == 4


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_mycert(CertificateStatus.REVOKED), "certificate revoked"),
        (_forged, "not the issuer's"),
        (_mycert(serial_delta=1), "another certificate"),
        (_stale, "expired"),
        (_try_later, "TRY_LATER"),
    ],
    ids=["revoked", "forged", "other-serial", "stale", "try-later"],
)
def test_what_a_careful_client_refuses(
    checker: Any, responder: Any, answer: Answerer, reason: str
) -> None:
    _, answer_leaf, asked = responder
    answer_leaf.append(answer)
    leaf = _leaf()
    refusal = _refusal(checker, leaf)
    assert refusal is not None
    assert reason in refusal
    _refusal(checker, leaf)
    if reason != "certificate revoked":
        assert len(asked) == 2  # nothing unverified was kept: asked again


def test_an_unreachable_responder_hard_fails_or_soft_fails(
    kit: ModuleType, ca: custody.CaPaths, tmp_path: Path
) -> None:
    from tests.support.tls_servers import free_port

    ca_file = tmp_path / "mycert-ca.pem"
    ca_file.write_bytes(ca.root_cert.read_bytes() + ca.issuing_cert.read_bytes())
    down = f"http://127.0.0.1:{free_port()}/pki/ocsp/"
    leaf = _leaf()
    hard = kit.OcspChecker(str(ca_file), responder=down, timeout=2)
    assert "unreachable" in (_refusal(hard, leaf) or "")
    soft = kit.OcspChecker(str(ca_file), responder=down, timeout=2, soft_fail=True)
    assert _refusal(soft, leaf) is None
