"""A service that accepts MyCert certificates, with Python's ssl module only.

    python3 mycert_relying_party.py PORT SERVER_CERT SERVER_KEY MYCERT_CA_PEM MYCERT_CRLS_PEM

``MYCERT_CA_PEM``: MyCert's root then issuing CA; ``MYCERT_CRLS_PEM``: their CRLs, kept
fresh by deploy/mycert-crl-refresh.sh (reload: send SIGHUP). docs/relying-parties.md
explains every choice; tests/integration/test_relying_parties.py runs this file.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

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

    def __init__(self, port: int, paths: tuple[str, str, str, str]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.paths = paths
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
        super().finish_request(request, client_address)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    port, *paths = sys.argv[1:]
    server = MyCertServer(int(port), (paths[0], paths[1], paths[2], paths[3]))

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        server.reload()
        logger.info("reloaded")

    signal.signal(signal.SIGHUP, on_hup)
    logger.info("listening on 127.0.0.1:%s", port)
    server.serve_forever()


if __name__ == "__main__":
    main()
