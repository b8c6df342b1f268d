"""Signed checkpoints of the audit log: a tree head in a signed-note-like text.

    rogatory.example/audit          origin: which log this is
    1234                            size: number of entries
    3q2+7w...=                      root hash, base64
    2026-11-22T10:00:00.000000Z     time of signing, RFC 3339 UTC
                                    blank line
    — rogatory.example/audit AAAA...   key id (4 bytes) || signature, base64

The signature covers the four body lines, each ending in a newline. The key
id is the first four bytes of SHA-256 over the key's SubjectPublicKeyInfo.
ECDSA keys sign with SHA-256 (DER signature), RSA with PKCS#1 v1.5 SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from signing.errors import RogatoryError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

MAX_NOTE_BYTES = 4096
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_ORIGIN = re.compile(r"[\x21-\x7e]{1,255}")


class CheckpointError(RogatoryError):
    """A checkpoint text is malformed, or a key cannot sign or check checkpoints."""


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with microseconds, the one time format of the audit log."""
    utc = when.astimezone(UTC)
    if utc.year < 1000:  # isoformat pads the year to four digits, strftime does not
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Every audit entry is stamped: isoformat costs half of strftime. It ends "+00:00".
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    if not _TIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a UTC time like 2026-11-22T10:00:00.000000Z")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def key_id(public_key: PublicKey) -> bytes:
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the log ``origin`` had ``size`` entries with root ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes
    time: datetime
    key_id: bytes
    signature: bytes

    def body(self) -> bytes:
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.size}\n{root}\n{format_time(self.time)}\n".encode()

    def to_note(self) -> str:
        sig = base64.b64encode(self.key_id + self.signature).decode()
        return f"{self.body().decode()}\n\u2014 {self.origin} {sig}\n"

    def signed_by(self, public_key: PublicKey) -> bool:
        """Whether ``public_key`` made this signature over this body."""
        if self.key_id != key_id(public_key):
            return False
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(self.signature, self.body(), ec.ECDSA(hashes.SHA256()))
            elif isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(self.signature, self.body(), padding.PKCS1v15(), hashes.SHA256())
            else:
                public_key.verify(self.signature, self.body())
        except InvalidSignature:
            return False
        return True


def sign_checkpoint(
    origin: str, size: int, root_hash: bytes, when: datetime, key: PrivateKey
) -> Checkpoint:
    if not _ORIGIN.fullmatch(origin):
        raise CheckpointError(f"the log origin {origin!r} must be printable ASCII without spaces")
    # Sign the microsecond-rounded time the note carries, nothing finer.
    unsigned = Checkpoint(origin, size, root_hash, parse_time(format_time(when)), b"", b"")
    body = unsigned.body()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(body)
    else:
        raise CheckpointError(f"cannot sign checkpoints with a {type(key).__name__}")
    return Checkpoint(origin, size, root_hash, unsigned.time, key_id(key.public_key()), signature)


def parse_checkpoint(note: str) -> Checkpoint:
    """A ``Checkpoint`` from its text; ``CheckpointError`` says what is wrong with it."""
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise CheckpointError("the checkpoint is longer than any this gateway writes")
    lines = note.split("\n")
    if len(lines) != 7 or lines[4] != "" or lines[6] != "":
        raise CheckpointError("a checkpoint has four body lines, a blank line and a signature")
    origin, size_text, root_text, time_text, _, signature_line, _ = lines
    if not _ORIGIN.fullmatch(origin):
        raise CheckpointError(f"bad origin line {origin!r}")
    if not size_text.isdigit() or len(size_text) > 19 or (size_text != "0" and size_text[0] == "0"):
        raise CheckpointError(f"bad size line {size_text!r}")
    try:
        root_hash = base64.b64decode(root_text, validate=True)
        when = parse_time(time_text)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"bad root or time line: {exc}") from None
    if len(root_hash) != 32:
        raise CheckpointError("the root hash is not 32 bytes")
    parts = signature_line.split(" ")
    if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != origin:
        raise CheckpointError("the signature line must read '\u2014 <origin> <base64>'")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise CheckpointError("the signature is not base64") from None
    if len(blob) < 5:
        raise CheckpointError("the signature is too short")
    return Checkpoint(origin, int(size_text), root_hash, when, blob[:4], blob[4:])


def load_public_key(pem: bytes) -> PublicKey:
    """The checkpoint key from a PEM certificate or a PEM public key."""
    public: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            public = x509.load_pem_x509_certificate(pem).public_key()
        else:
            public = load_pem_public_key(pem)
    except ValueError as exc:
        raise CheckpointError(f"cannot read the checkpoint key: {exc}") from None
    if not isinstance(
        public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    ):
        raise CheckpointError(f"checkpoints are not signed with {type(public).__name__} keys")
    return public
