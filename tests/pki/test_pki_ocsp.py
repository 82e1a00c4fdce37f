"""mycert.pki.ocsp: requests from `openssl ocsp`, responses verified by it (RFC 6960)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycert.pki import (
    CertificateAuthority,
    CertificateStatus,
    KeyType,
    OcspQuery,
    StatusAnswer,
    build_ocsp_response,
    create_ocsp_responder,
    error_response,
    issued_by,
    parse_ocsp_request,
)
from mycert.pki.names import DistinguishedName
from tests.pki.helpers import ORGANIZATION, Leaf, pkilint_findings, run_command

REVOKED_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
# SHA-1 is RFC 6960's default CertID hash (a lookup key, not a signature).
CERTID_SHA1 = hashes.SHA1()  # noqa: S303


def _openssl_request(
    openssl: str, issuing_pem: Path, leaf_pem: Path, out: Path, *, digest: str, nonce: bool
) -> bytes:
    # The digest option must come before -cert: it picks the CertID hash for that cert.
    args: list[str | Path] = [openssl, "ocsp", "-issuer", issuing_pem, f"-{digest}", "-cert"]
    args += [leaf_pem, "-reqout", out, "-nonce" if nonce else "-no_nonce"]
    run_command(args)
    return out.read_bytes()


ANSWERS = {
    "good": StatusAnswer(CertificateStatus.GOOD),
    "revoked": StatusAnswer(
        CertificateStatus.REVOKED, revoked_at=REVOKED_AT, reason=x509.ReasonFlags.key_compromise
    ),
    "unknown": StatusAnswer(CertificateStatus.UNKNOWN),
}


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
@pytest.mark.parametrize("status", list(ANSWERS))
def test_openssl_verifies_the_response(
    digest: str,
    status: str,
    rsa_leaf: Leaf,
    issuing_ca: CertificateAuthority,
    ocsp_responder: CertificateAuthority,
    openssl: str,
    root_pem: Path,
    issuing_pem: Path,
    tmp_path: Path,
) -> None:
    request_der = _openssl_request(
        openssl, issuing_pem, rsa_leaf.pem_path, tmp_path / "req.der", digest=digest, nonce=True
    )
    query = parse_ocsp_request(request_der)
    assert query.hash_algorithm.name == digest
    assert query.serial_number == rsa_leaf.certificate.serial_number
    assert query.nonce is not None
    assert issued_by(query, issuing_ca.certificate)

    response = build_ocsp_response(
        query=query,
        issuer_certificate=issuing_ca.certificate,
        responder=ocsp_responder,
        answer=ANSWERS[status],
        now=datetime.now(UTC),
    )
    response_path = tmp_path / "resp.der"
    response_path.write_bytes(response)

    # 1. Against the very request: signature, responder authorisation, nonce echo.
    #    (Adding -cert here would make openssl build a fresh request with a new nonce.)
    checked = run_command(
        [openssl, "ocsp", "-respin", response_path, "-reqin", tmp_path / "req.der",
         "-verify_other", issuing_pem, "-CAfile", root_pem, "-resp_text"]
    )  # fmt: skip
    assert "Response verify OK" in checked.stderr
    assert "Nonce Verify error" not in checked.stderr + checked.stdout
    assert f"Hash Algorithm: {digest}" in checked.stdout
    assert f"Cert Status: {status}" in checked.stdout

    # 2. The status summary openssl prints for a certificate (CertID matched).
    summary = run_command(
        [openssl, "ocsp", "-respin", response_path, "-issuer", issuing_pem, f"-{digest}",
         "-cert", rsa_leaf.pem_path, "-no_nonce", "-CAfile", root_pem]
    )  # fmt: skip
    assert "Response verify OK" in summary.stderr
    assert f"{rsa_leaf.pem_path}: {status}" in summary.stdout
    if status == "revoked":
        assert "Reason: keyCompromise" in summary.stdout
        assert "Revocation Time: Jan 15 09:30:00 2026 GMT" in summary.stdout


def test_response_fields(
    rsa_leaf: Leaf,
    issuing_ca: CertificateAuthority,
    ocsp_responder: CertificateAuthority,
    openssl: str,
    issuing_pem: Path,
    tmp_path: Path,
) -> None:
    query = parse_ocsp_request(
        _openssl_request(
            openssl, issuing_pem, rsa_leaf.pem_path, tmp_path / "q.der", digest="sha256", nonce=True
        )
    )
    now = datetime.now(UTC).replace(microsecond=0)
    der = build_ocsp_response(
        query=query,
        issuer_certificate=issuing_ca.certificate,
        responder=ocsp_responder,
        answer=ANSWERS["revoked"],
        now=now,
        validity=timedelta(minutes=30),
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == REVOKED_AT
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.this_update_utc == now
    assert response.next_update_utc == now + timedelta(minutes=30)
    assert response.serial_number == rsa_leaf.certificate.serial_number
    assert response.issuer_name_hash == query.issuer_name_hash
    assert response.issuer_key_hash == query.issuer_key_hash
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    # ResponderID byKey (RFC 6960 §4.2.1) and the responder's certificate included.
    ski = ocsp_responder.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert response.responder_key_hash == ski.value.digest
    assert response.responder_name is None
    assert response.certificates == [ocsp_responder.certificate]
    nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert nonce == query.nonce


def test_no_nonce_no_echo(
    rsa_leaf: Leaf,
    issuing_ca: CertificateAuthority,
    ocsp_responder: CertificateAuthority,
    openssl: str,
    issuing_pem: Path,
    tmp_path: Path,
) -> None:
    query = parse_ocsp_request(
        _openssl_request(
            openssl, issuing_pem, rsa_leaf.pem_path, tmp_path / "q.der", digest="sha1", nonce=False
        )
    )
    assert query.nonce is None
    der = build_ocsp_response(
        query=query,
        issuer_certificate=issuing_ca.certificate,
        responder=ocsp_responder,
        answer=ANSWERS["good"],
        now=datetime.now(UTC),
    )
    with pytest.raises(x509.ExtensionNotFound):
        ocsp.load_der_ocsp_response(der).extensions.get_extension_for_class(x509.OCSPNonce)


def test_pkilint_ocsp_response(
    rsa_leaf: Leaf,
    issuing_ca: CertificateAuthority,
    ocsp_responder: CertificateAuthority,
    openssl: str,
    issuing_pem: Path,
    tmp_path: Path,
) -> None:
    query = parse_ocsp_request(
        _openssl_request(
            openssl, issuing_pem, rsa_leaf.pem_path, tmp_path / "q.der", digest="sha1", nonce=True
        )
    )
    path = tmp_path / "resp.der"
    path.write_bytes(
        build_ocsp_response(
            query=query,
            issuer_certificate=issuing_ca.certificate,
            responder=ocsp_responder,
            answer=ANSWERS["revoked"],
            now=datetime.now(UTC),
        )
    )
    findings = pkilint_findings("lint_ocsp_response", [], path)
    assert not [f for f in findings if f["severity"] in {"ERROR", "FATAL"}], findings
    assert {f["severity"] for f in findings} <= {"INFO"}, findings


def _pyca_query(
    leaf: Leaf, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm, nonce: bytes | None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.certificate, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def test_issued_by(
    rsa_leaf: Leaf, issuing_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    for algorithm in (CERTID_SHA1, hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, algorithm, None))
        assert issued_by(query, issuing_ca.certificate)
        assert not issued_by(query, root_ca.certificate)


def test_refuses_to_answer_for_another_issuer(
    rsa_leaf: Leaf,
    issuing_ca: CertificateAuthority,
    root_ca: CertificateAuthority,
    ocsp_responder: CertificateAuthority,
) -> None:
    # A CertID naming the root as issuer: our delegated responder may not answer it.
    foreign = parse_ocsp_request(_pyca_query(rsa_leaf, root_ca.certificate, CERTID_SHA1, None))
    with pytest.raises(ValueError, match="does not name issuer_certificate as issuer"):
        build_ocsp_response(
            query=foreign,
            issuer_certificate=issuing_ca.certificate,
            responder=ocsp_responder,
            answer=ANSWERS["good"],
            now=datetime.now(UTC),
        )


def test_refuses_an_unauthorised_responder(
    rsa_leaf: Leaf, issuing_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, None))
    with pytest.raises(ValueError, match="not issued by issuer_certificate"):
        build_ocsp_response(
            query=query,
            issuer_certificate=issuing_ca.certificate,
            responder=root_ca,
            answer=ANSWERS["good"],
            now=datetime.now(UTC),
        )


def test_issuing_ca_may_answer_itself(rsa_leaf: Leaf, issuing_ca: CertificateAuthority) -> None:
    query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, None))
    der = build_ocsp_response(
        query=query,
        issuer_certificate=issuing_ca.certificate,
        responder=issuing_ca,
        answer=ANSWERS["good"],
        now=datetime.now(UTC),
    )
    assert ocsp.load_der_ocsp_response(der).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_refuses_an_expired_responder(
    rsa_leaf: Leaf, issuing_ca: CertificateAuthority, now: datetime
) -> None:
    responder = create_ocsp_responder(
        issuer=issuing_ca,
        subject=DistinguishedName("Short-lived responder", ORGANIZATION, "LU"),
        key_type=KeyType.EC_P256,
        now=now,
        validity_days=1,
    )
    query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, None))
    with pytest.raises(ValueError, match="the responder certificate is not valid at now"):
        build_ocsp_response(
            query=query,
            issuer_certificate=issuing_ca.certificate,
            responder=responder,
            answer=ANSWERS["good"],
            now=now + timedelta(days=2),
        )


def test_build_response_checks(
    rsa_leaf: Leaf, issuing_ca: CertificateAuthority, ocsp_responder: CertificateAuthority
) -> None:
    query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, None))
    kwargs = {
        "query": query,
        "issuer_certificate": issuing_ca.certificate,
        "responder": ocsp_responder,
        "answer": ANSWERS["good"],
    }
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        build_ocsp_response(**kwargs, now=datetime.now(UTC).replace(tzinfo=None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="validity must be positive"):
        build_ocsp_response(**kwargs, now=datetime.now(UTC), validity=timedelta(0))  # type: ignore[arg-type]


def test_status_answer_checks() -> None:
    with pytest.raises(ValueError, match="a revoked status needs revoked_at"):
        StatusAnswer(CertificateStatus.REVOKED)
    with pytest.raises(ValueError, match="revoked_at and reason are only allowed for REVOKED"):
        StatusAnswer(CertificateStatus.GOOD, revoked_at=REVOKED_AT)
    with pytest.raises(ValueError, match="revoked_at must be timezone-aware"):
        StatusAnswer(CertificateStatus.REVOKED, revoked_at=REVOKED_AT.replace(tzinfo=None))
    with pytest.raises(TypeError, match="status must be a CertificateStatus"):
        StatusAnswer("good")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "der",
    [b"", b"\x00", b"\x30\x00", b"\x30\x03\x02\x01\x01", b"not der at all", b"\x30" * 100],
    ids=["empty", "zero", "empty-seq", "int", "text", "nested"],
)
def test_malformed_requests(der: bytes) -> None:
    with pytest.raises(ValueError, match="malformed or unsupported OCSP request"):
        parse_ocsp_request(der)


def test_parse_refuses_wrong_type() -> None:
    with pytest.raises(TypeError, match="der must be bytes"):
        parse_ocsp_request("MEIwQDA+")  # type: ignore[arg-type]


def test_multiple_certificates_in_one_request(
    rsa_leaf: Leaf, openssl: str, issuing_pem: Path, tmp_path: Path
) -> None:
    out = tmp_path / "multi.der"
    run_command(
        [openssl, "ocsp", "-issuer", issuing_pem, "-cert", rsa_leaf.pem_path,
         "-serial", "0x1234", "-reqout", out]
    )  # fmt: skip
    with pytest.raises(ValueError, match="malformed or unsupported OCSP request"):
        parse_ocsp_request(out.read_bytes())


def test_nonce_length_limits(rsa_leaf: Leaf, issuing_ca: CertificateAuthority) -> None:
    # RFC 8954 §2.1: 1 to 32 octets; longer nonces are answered with malformedRequest.
    assert (
        parse_ocsp_request(
            _pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, b"n" * 32)
        ).nonce
        == b"n" * 32
    )
    with pytest.raises(ValueError, match="nonce of 33 octets"):
        parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, b"n" * 33))


@pytest.mark.parametrize(
    "status", [ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED]
)
def test_error_response(status: ocsp.OCSPResponseStatus, openssl: str, tmp_path: Path) -> None:
    der = error_response(status)
    assert ocsp.load_der_ocsp_response(der).response_status is status
    path = tmp_path / "error.der"
    path.write_bytes(der)
    # openssl exits non-zero on an unsuccessful response; it still reads and prints it.
    completed = subprocess.run(
        [openssl, "ocsp", "-respin", str(path), "-resp_text", "-noverify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert f"({status.value})" in completed.stdout + completed.stderr


def test_error_response_refuses_success() -> None:
    with pytest.raises(ValueError, match="needs an error status, not SUCCESSFUL"):
        error_response(ocsp.OCSPResponseStatus.SUCCESSFUL)
    with pytest.raises(TypeError, match="status must be an OCSPResponseStatus"):
        error_response(1)  # type: ignore[arg-type]


def test_query_keeps_the_parsed_request(rsa_leaf: Leaf, issuing_ca: CertificateAuthority) -> None:
    query = parse_ocsp_request(_pyca_query(rsa_leaf, issuing_ca.certificate, CERTID_SHA1, b"x"))
    assert isinstance(query, OcspQuery)
    assert isinstance(query.request, ocsp.OCSPRequest)
    assert query.request.serial_number == query.serial_number


# --- fuzzing ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_request(rsa_leaf: Leaf, issuing_ca: CertificateAuthority) -> bytes:
    return _pyca_query(rsa_leaf, issuing_ca.certificate, hashes.SHA256(), bytes(range(16)))


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Return near-valid requests: a few bytes changed, or cut short."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=4)

    def mutate(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(valid)
        for position, value in changes:
            data[position] = value
        return bytes(data)

    truncations = st.integers(0, len(valid)).map(lambda n: valid[:n])
    return st.one_of(flips.map(mutate), truncations)


@settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_parse_ocsp_request_only_raises_value_error(
    valid_request: bytes, data: st.DataObject
) -> None:
    der = data.draw(st.one_of(st.binary(max_size=512), _mutations(valid_request)))
    try:
        query = parse_ocsp_request(der)
    except ValueError:
        return
    assert query.serial_number > 0
    assert len(query.issuer_name_hash) == query.hash_algorithm.digest_size
