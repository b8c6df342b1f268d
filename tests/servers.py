"""Real servers on 127.0.0.1 for tests: an RFC 3161 TSA and a CRL/OCSP responder.

Each is a context manager that serves from a thread on an ephemeral port and
yields its URL; leaving the block stops the server and closes its socket.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.sign.general import as_signing_certificate_v2

from gateway.pki import DevPKI, load_dev_pki


class TsaMode(StrEnum):
    OK = "ok"
    HTTP_500 = "http-500"
    GARBAGE = "garbage"  # 200 with bytes that are no TimeStampResp
    REJECTION = "rejection"  # a well-formed TimeStampResp with status rejection
    WRONG_IMPRINT = "wrong-imprint"  # a valid token, but over other data
    WRONG_NONCE = "wrong-nonce"  # a valid token, but not an answer to this request


Handler = Callable[[str, str, bytes], tuple[int, str, bytes]]


@contextmanager
def _serve(handle: Handler) -> Iterator[str]:
    class RequestHandler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, content_type, payload = handle(method, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output to the test's own story

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def tsa_server(
    tsa_cert: x509.Certificate,
    tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    mode: TsaMode = TsaMode.OK,
    extra_certs: Sequence[x509.Certificate] = (),
) -> Iterator[str]:
    """An RFC 3161 HTTP TSA (POST application/timestamp-query); yields its URL."""

    def handle(method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if mode is TsaMode.HTTP_500:
            return 500, "text/plain", b"the TSA is having a bad day"
        if mode is TsaMode.GARBAGE:
            return 200, "application/timestamp-reply", b"<html>not a TimeStampResp</html>"
        if method != "POST":
            return 405, "text/plain", b"POST a TimeStampReq"
        try:
            request = tsp.TimeStampReq.load(body)
            request.native  # noqa: B018 - parse fully now, so a bad request is a 400
        except ValueError:
            return 400, "text/plain", b"not a TimeStampReq"
        if mode is TsaMode.REJECTION:
            status = {"status": "rejection", "status_string": ["policy says no"]}
            # asn1crypto's TimeStampResp cannot omit the token, so encode SEQUENCE { status }
            status_der = tsp.PKIStatusInfo(status).dump()
            body = bytes([0x30, len(status_der)]) + status_der  # short-form length: < 128
            return 200, "application/timestamp-reply", body
        response = _grant(request, tsa_cert, tsa_key, mode, extra_certs)
        return 200, "application/timestamp-reply", response.dump()

    with _serve(handle) as url:
        yield url + "/tsa"


def _grant(
    request: tsp.TimeStampReq,
    tsa_cert: x509.Certificate,
    tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    mode: TsaMode,
    extra_certs: Sequence[x509.Certificate],
) -> tsp.TimeStampResp:
    imprint = request["message_imprint"]
    if mode is TsaMode.WRONG_IMPRINT:
        algo = imprint["hash_algorithm"]["algorithm"].native
        imprint = tsp.MessageImprint(
            {
                "hash_algorithm": imprint["hash_algorithm"],
                "hashed_message": hashlib.new(algo, b"some other document").digest(),
            }
        )
    nonce = request["nonce"].native
    if mode is TsaMode.WRONG_NONCE and nonce is not None:
        nonce += 1
    cert = asn1_x509.Certificate.load(tsa_cert.public_bytes(serialization.Encoding.DER))
    tst_info = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": "1.3.6.1.4.1.99999.3161.1",  # a private-arc placeholder policy
            "message_imprint": imprint,
            "serial_number": secrets.randbits(63),
            "gen_time": datetime.now(UTC).replace(microsecond=0),
            "nonce": nonce,
            "tsa": {"directory_name": cert.subject},
        }
    )
    content = tst_info.dump()
    signed_attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.sha256(content).digest()]},
            {"type": "signing_certificate_v2", "values": [as_signing_certificate_v2(cert)]},
        ]
    )
    if isinstance(tsa_key, rsa.RSAPrivateKey):
        sig_algo = "sha256_rsa"
        signature = tsa_key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    else:
        sig_algo = "sha256_ecdsa"
        signature = tsa_key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
    signer_info = {
        "version": "v1",
        "sid": {
            "issuer_and_serial_number": {"issuer": cert.issuer, "serial_number": cert.serial_number}
        },
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_algo}),
        "signature": signature,
    }
    certs = [cert] if request["cert_req"].native else []
    certs += [
        asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in extra_certs
    ]
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(content),
            },
            "certificates": certs or None,
            "signer_infos": [signer_info],
        }
    )
    token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})


@contextmanager
def revocation_server(pki: DevPKI | Path) -> Iterator[str]:
    """Serve a dev PKI's CRLs at `{url}/crl/{ca}.crl` and OCSP at `{url}/ocsp`; yields url.

    Given a Path, the folder is read on each request, so the server may start
    before `create_dev_pki` writes the PKI that points at it.
    """

    def handle(method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        current = pki if isinstance(pki, DevPKI) else load_dev_pki(pki)
        if method == "GET" and path.startswith("/crl/") and path.endswith(".crl"):
            ca = path.removeprefix("/crl/").removesuffix(".crl")
            if ca not in current.names():
                return 404, "text/plain", b"no such CA"
            return 200, "application/pkix-crl", current.crl_der(ca)
        if path.startswith("/ocsp"):
            if method == "GET":  # RFC 6960 A.1: base64 of the DER request in the path
                body = base64.b64decode(unquote(path.removeprefix("/ocsp/")))
            return 200, "application/ocsp-response", current.ocsp_response_der(body)
        return 404, "text/plain", b"not found"

    with _serve(handle) as url:
        yield url
