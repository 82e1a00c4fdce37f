"""A service that accepts MyCert certificates, with Python's ssl module and cryptography.

    python3 mycert_relying_party.py PORT SERVER_CERT SERVER_KEY MYCERT_CA_PEM MYCERT_CRLS_PEM
        [--ocsp-responder URL] [--ocsp-cache SECONDS] [--ocsp-timeout SECONDS]
        [--ocsp-soft-fail | --no-ocsp]

``MYCERT_CA_PEM``: MyCert's root then issuing CA; ``MYCERT_CRLS_PEM``: their CRLs, kept
fresh by deploy/mycert-crl-refresh.sh (reload: send SIGHUP). Python's ``ssl`` cannot ask
OCSP about a client certificate, so after the handshake this server asks MyCert's
responder about every certificate of the path with ``cryptography``'s OCSP builder,
keeping a verified answer at most ``--ocsp-cache`` seconds (30: the 60 s goal).
docs/relying-parties.md explains every choice; tests/integration/test_relying_parties.py
runs this file.
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

logger = logging.getLogger("mycert_relying_party")


def mycert_context(
    server_cert: str, server_key: str, ca_file: str, crl_file: str
) -> ssl.SSLContext:
    """A TLS server context that requires a valid, unrevoked MyCert client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # OpenSSL also requires the clientAuth EKU
    context.load_verify_locations(cafile=ca_file)
    context.load_verify_locations(cafile=crl_file)  # PEM CRLs load like certificates
    # Every certificate of the path is checked against its CA's CRL (the root's included).
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    return context


def professional_id(peer: dict[str, Any]) -> str:
    """The professional identifier: the subject's serialNumber attribute."""
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "serialNumber":
                return str(value)
    return ""


# RFC 6960 §4.2.2.1 gives no skew; OpenSSL and nginx allow five minutes of clock skew.
CLOCK_SKEW = timedelta(minutes=5)


class OcspError(Exception):
    """No usable answer: the responder is unreachable, answered an error, or lied."""


class OcspChecker:
    """Asks MyCert's OCSP responder about every certificate of a client's path.

    Only verified answers are kept, at most ``cache_seconds`` and never past their
    nextUpdate, so a revocation is refused at most that long after MyCert answers it.
    Errors (responder down, tryLater) are never kept: the next connection asks again.
    """

    def __init__(
        self,
        ca_file: str,
        *,
        responder: str | None,
        cache_seconds: float = 30,
        timeout: float = 5,
        soft_fail: bool = False,
    ) -> None:
        with open(ca_file, "rb") as handle:
            self.authorities = x509.load_pem_x509_certificates(handle.read())
        self.responder = responder
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.soft_fail = soft_fail
        self.cache: dict[tuple[bytes, int], tuple[float, ocsp.OCSPCertStatus]] = {}
        self.lock = threading.Lock()

    def refusal(self, leaf_der: bytes) -> str | None:
        """Why the path of this (handshake-verified) certificate is refused; None if not."""
        certificate = x509.load_der_x509_certificate(leaf_der)
        url = self.responder or _ocsp_url(certificate)
        if url is None:
            return "no OCSP responder for the certificate"
        while certificate.issuer != certificate.subject:
            issuer = next((c for c in self.authorities if c.subject == certificate.issuer), None)
            if issuer is None:
                return "issuer not in the CA file"
            try:
                status = self._status(url, certificate, issuer)
            except OcspError as exc:
                if self.soft_fail:
                    logger.warning("OCSP soft fail for %x: %s", certificate.serial_number, exc)
                    return None
                return f"OCSP: {exc}"
            if status is ocsp.OCSPCertStatus.REVOKED:
                return "certificate revoked (OCSP)"
            if status is not ocsp.OCSPCertStatus.GOOD:
                return "certificate unknown to the OCSP responder"
            certificate = issuer
        return None

    def _status(
        self, url: str, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> ocsp.OCSPCertStatus:
        key = (issuer.fingerprint(hashes.SHA256()), certificate.serial_number)
        now = time.monotonic()
        with self.lock:
            cached = self.cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        status, next_update = self._ask(url, certificate, issuer)
        left = (next_update - datetime.now(UTC)).total_seconds()
        with self.lock:
            self.cache[key] = (now + min(self.cache_seconds, left), status)
        return status

    def _ask(
        self, url: str, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> tuple[ocsp.OCSPCertStatus, datetime]:
        # SHA-1 CertID: what RFC 5019 §2.1.1 profiles and MyCert pre-signs. No nonce: the
        # answers are signed ahead (RFC 5019 §4); freshness is thisUpdate/nextUpdate.
        request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
        body = request.build().public_bytes(serialization.Encoding.DER)
        http = urllib.request.Request(  # noqa: S310 - the configured responder, http(s)
            url, data=body, headers={"Content-Type": "application/ocsp-request"}
        )
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as reply:  # noqa: S310
                response = ocsp.load_der_ocsp_response(reply.read(64 * 1024))
        except (OSError, ValueError) as exc:
            raise OcspError(f"responder unreachable or garbled: {exc}") from exc
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise OcspError(f"responder answered {response.response_status.name}")
        expected = request.build()
        if (
            response.serial_number != certificate.serial_number
            or response.issuer_key_hash != expected.issuer_key_hash
            or response.issuer_name_hash != expected.issuer_name_hash
        ):
            raise OcspError("the answer is about another certificate")
        _verify_signer(response, issuer)
        now = datetime.now(UTC)
        next_update = response.next_update_utc
        if response.this_update_utc > now + CLOCK_SKEW:
            raise OcspError("the answer is from the future")
        if next_update is None or next_update < now - CLOCK_SKEW:
            raise OcspError("the answer has expired")
        return response.certificate_status, next_update


def _ocsp_url(certificate: x509.Certificate) -> str | None:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return None
    for description in aia.value:
        if description.access_method == AuthorityInformationAccessOID.OCSP:
            return str(description.access_location.value)
    return None


def _verify_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """RFC 6960 §4.2.2.2: signed by the issuer itself or its delegated responder."""
    signer = issuer
    if not _names(response, issuer):
        candidates = [c for c in response.certificates if _names(response, c)]
        if not candidates:
            raise OcspError("the answer's signer is not in it")
        signer = candidates[0]
        try:
            signer.verify_directly_issued_by(issuer)
            eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as exc:
            raise OcspError(f"the responder certificate is not the issuer's: {exc}") from exc
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise OcspError("the responder certificate lacks id-kp-OCSPSigning")
        now = datetime.now(UTC)
        if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
            raise OcspError("the responder certificate has expired")
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            raise OcspError("unsupported responder key")
    except InvalidSignature as exc:
        raise OcspError("the answer's signature is invalid") from exc


def _names(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    """Whether the answer's ResponderID names this certificate (byKey or byName)."""
    if response.responder_key_hash is not None:
        digest = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
        return response.responder_key_hash == digest.digest
    return response.responder_name == certificate.subject


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.request.getpeercert()  # verified by the handshake
        body = f"MyCert professional {professional_id(peer)}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class MyCertServer(ThreadingHTTPServer):
    """Wraps each accepted connection with the current context, so a reload takes effect."""

    def __init__(
        self, port: int, paths: tuple[str, str, str, str], ocsp: OcspChecker | None = None
    ) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.paths = paths
        self.ocsp = ocsp
        self.lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        # OpenSSL cannot drop a CRL from a store: a fresh context reads the new file.
        context = mycert_context(*self.paths)
        with self.lock:
            self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(30)
        with self.lock:
            context = self.context
        # The handshake happens in the connection's thread (finish_request), so that a slow
        # client cannot hold up the accept loop.
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            # A refused certificate (revoked, expired, unknown CA, no clientAuth) ends here.
            reason = getattr(exc, "verify_message", "") or getattr(exc, "reason", "") or exc
            logger.warning("refused %s: %s", client_address[0], reason)
            return
        if self.ocsp is not None:
            refusal = self.ocsp.refusal(request.getpeercert(binary_form=True))
            if refusal is not None:
                logger.warning("refused %s: %s", client_address[0], refusal)
                body = b"Certificate refused\n"
                request.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                return
        super().finish_request(request, client_address)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("port", type=int)
    for name in ("server_cert", "server_key", "ca_file", "crl_file"):
        parser.add_argument(name)
    parser.add_argument(
        "--ocsp-responder",
        default=None,
        help="MyCert's OCSP address for the whole path (default: the certificate's AIA)",
    )
    parser.add_argument("--ocsp-cache", type=float, default=30, help="seconds (default 30)")
    parser.add_argument("--ocsp-timeout", type=float, default=5, help="seconds (default 5)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--ocsp-soft-fail",
        action="store_true",
        help="accept when no OCSP answer can be had (the CRL still applies); not for prescriptions",
    )
    mode.add_argument("--no-ocsp", action="store_true", help="CRLs only")
    args = parser.parse_args(sys.argv[1:])
    checker = None
    if not args.no_ocsp:
        checker = OcspChecker(
            args.ca_file,
            responder=args.ocsp_responder,
            cache_seconds=args.ocsp_cache,
            timeout=args.ocsp_timeout,
            soft_fail=args.ocsp_soft_fail,
        )
    paths = (args.server_cert, args.server_key, args.ca_file, args.crl_file)
    server = MyCertServer(args.port, paths, checker)

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        server.reload()
        logger.info("reloaded")

    signal.signal(signal.SIGHUP, on_hup)
    logger.info("listening on 127.0.0.1:%s", args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
