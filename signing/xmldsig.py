"""XML-DSig primitives: algorithms as enums, canonicalization, raw signatures.

Both the XAdES signer and the verifier use these; nothing here decides trust.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
DS11 = "http://www.w3.org/2009/xmldsig11#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
XADES141 = "http://uri.etsi.org/01903/v1.4.1#"
NS = {"ds": DS, "xades": XADES, "xades141": XADES141, "ds11": DS11}

ENVELOPED = DS + "enveloped-signature"
BASE64 = DS + "base64"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"


E = TypeVar("E", bound=Enum)


class UnsupportedAlgorithm(Exception):
    """An algorithm URI Rogatory does not implement (or refuses to)."""


class C14N(Enum):
    """Canonicalization methods, by URI."""

    C14N10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    C14N10_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
    # C14N 1.1 differs from 1.0 only for xml:id/xml:base inheritance, which the
    # envelope never uses; libxml2 has no 1.1, so 1.0 serves, as signxml does.
    C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
    C14N11_COMMENTS = "http://www.w3.org/2006/12/xml-c14n11#WithComments"
    EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
    EXC_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"

    @property
    def exclusive(self) -> bool:
        return self in (C14N.EXC, C14N.EXC_COMMENTS)

    @property
    def with_comments(self) -> bool:
        return self.value.endswith("#WithComments")


class Digest(Enum):
    SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
    SHA224 = "http://www.w3.org/2001/04/xmldsig-more#sha224"
    SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
    SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
    SHA3_256 = "http://www.w3.org/2007/05/xmldsig-more#sha3-256"
    SHA3_512 = "http://www.w3.org/2007/05/xmldsig-more#sha3-512"

    @property
    def weak(self) -> bool:
        return self is Digest.SHA1


# hashlib's constructors, not cryptography's Hash: the same OpenSSL digests at
# a third of the cost for the few KB of a reference.
_HASHES: dict[Digest, Callable[[bytes], hashlib._Hash]] = {
    Digest.SHA1: hashlib.sha1,
    Digest.SHA224: hashlib.sha224,
    Digest.SHA256: hashlib.sha256,
    Digest.SHA384: hashlib.sha384,
    Digest.SHA512: hashlib.sha512,
    Digest.SHA3_256: hashlib.sha3_256,
    Digest.SHA3_512: hashlib.sha3_512,
}


class SignatureMethod(Enum):
    RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    RSA_SHA224 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha224"
    RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
    RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    RSA_PSS_SHA256 = "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1"
    RSA_PSS_SHA512 = "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1"
    ECDSA_SHA1 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1"
    ECDSA_SHA224 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha224"
    ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
    ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
    DSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#dsa-sha1"
    DSA_SHA256 = "http://www.w3.org/2009/xmldsig11#dsa-sha256"
    ED25519 = "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
    ED448 = "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed448"

    @property
    def family(self) -> str:
        return self.name.split("_")[0]

    @property
    def digest(self) -> type[hashes.HashAlgorithm] | None:
        suffix = self.name.rsplit("_", 1)[-1]
        return {
            "SHA1": hashes.SHA1,
            "SHA224": hashes.SHA224,
            "SHA256": hashes.SHA256,
            "SHA384": hashes.SHA384,
            "SHA512": hashes.SHA512,
        }.get(suffix)

    @property
    def weak(self) -> bool:
        return self.digest is hashes.SHA1


def algorithm(enum: type[E], uri: str | None, what: str) -> E:
    """The enum member for ``uri``, or ``UnsupportedAlgorithm`` naming it."""
    try:
        return enum(uri)
    except ValueError:
        raise UnsupportedAlgorithm(f"unsupported {what} algorithm {uri!r}") from None


# Re-reads only Rogatory's own serialization of an already parsed tree.
_REPARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def canonicalize(node: etree._Element, method: C14N, *, with_comments: bool | None = None) -> bytes:
    """The canonical form of ``node``'s subtree (in-scope namespaces included).

    A subtree is first made the root of a document of its own: lxml 6 /
    libxml2 2.14 canonicalize an element that is not the root wrongly when a
    default namespace is declared above it (its grandchildren get
    ``xmlns=""``), which breaks every XML-DSig that uses ``xmlns=`` for ds.
    """
    comments = method.with_comments if with_comments is None else with_comments
    if node.getparent() is not None:
        node = _as_root(node, method)
    return etree.tostring(node, method="c14n", exclusive=method.exclusive, with_comments=comments)


def _as_root(node: etree._Element, method: C14N) -> etree._Element:
    """A copy of ``node`` as the root of a document of its own, with the same in-scope namespaces.

    A deep copy declares on its root the outside namespaces its elements and
    attributes use, which is all that exclusive c14n prints; inclusive c14n
    prints every in-scope namespace, so when the copy lacks one, the element
    is serialized (which declares them all) and read back instead.
    """
    copied = copy.deepcopy(node)
    copied.tail = None  # a tail is a sibling of the new root, and lxml c14n then copies it again
    if method.exclusive or copied.nsmap == node.nsmap:
        return copied
    return etree.fromstring(etree.tostring(node, with_tail=False), parser=_REPARSER)


def digest(data: bytes, method: Digest) -> bytes:
    return _HASHES[method](data).digest()


PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | dsa.DSAPublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class KeyCheck:
    """Whether a key is strong enough for Rogatory's policy, and why not."""

    ok: bool
    reason: str = ""


def key_strength(key: object) -> KeyCheck:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return KeyCheck(False, f"RSA key of {key.key_size} bits, below the minimum of 2048")
    if isinstance(key, dsa.DSAPublicKey) and key.key_size < 2048:
        return KeyCheck(False, f"DSA key of {key.key_size} bits, below the minimum of 2048")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        return KeyCheck(False, f"EC key on {key.curve.name}, below 256 bits")
    return KeyCheck(True)


def _ec_raw_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2
    if len(raw) % 2 or not half:
        raise InvalidSignature("malformed ECDSA/DSA signature value")
    return encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))


_EDDSA_KEYS: dict[SignatureMethod, type[ed25519.Ed25519PublicKey] | type[ed448.Ed448PublicKey]] = {
    SignatureMethod.ED25519: ed25519.Ed25519PublicKey,
    SignatureMethod.ED448: ed448.Ed448PublicKey,
}


def verify_raw(key: object, method: SignatureMethod, signature: bytes, data: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` over ``data`` verifies with ``key``."""
    family, hash_cls = method.family, method.digest
    if method in (SignatureMethod.RSA_PSS_SHA256, SignatureMethod.RSA_PSS_SHA512):
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidSignature(f"the key does not match the signature method {method.value}")
        pss_hash = hashes.SHA256() if method is SignatureMethod.RSA_PSS_SHA256 else hashes.SHA512()
        key.verify(
            signature, data, padding.PSS(padding.MGF1(pss_hash), pss_hash.digest_size), pss_hash
        )
    elif family == "RSA" and isinstance(key, rsa.RSAPublicKey) and hash_cls:
        key.verify(signature, data, padding.PKCS1v15(), hash_cls())
    elif family == "ECDSA" and isinstance(key, ec.EllipticCurvePublicKey) and hash_cls:
        key.verify(_ec_raw_to_der(signature), data, ec.ECDSA(hash_cls()))
    elif family == "DSA" and isinstance(key, dsa.DSAPublicKey) and hash_cls:
        key.verify(_ec_raw_to_der(signature), data, hash_cls())
    elif method in _EDDSA_KEYS and isinstance(key, _EDDSA_KEYS[method]):
        key.verify(signature, data)
    else:
        raise InvalidSignature(f"the key does not match the signature method {method.value}")


def method_for(key: PrivateKey) -> SignatureMethod:
    """The signature method Rogatory uses with ``key``."""
    if isinstance(key, rsa.RSAPrivateKey):
        return SignatureMethod.RSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return (
            SignatureMethod.ECDSA_SHA384
            if key.curve.key_size > 256
            else SignatureMethod.ECDSA_SHA256
        )
    return SignatureMethod.ED25519


def sign_raw(key: PrivateKey, method: SignatureMethod, data: bytes) -> bytes:
    """Sign ``data`` with ``key`` by ``method`` (one of ``method_for``'s answers)."""
    hash_cls = method.digest
    if isinstance(key, rsa.RSAPrivateKey) and method.family == "RSA" and hash_cls:
        return key.sign(data, padding.PKCS1v15(), hash_cls())
    if isinstance(key, ec.EllipticCurvePrivateKey) and method.family == "ECDSA" and hash_cls:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_cls())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size) + s.to_bytes(size)
    if isinstance(key, ed25519.Ed25519PrivateKey) and method is SignatureMethod.ED25519:
        return key.sign(data)
    raise UnsupportedAlgorithm(f"cannot sign with {type(key).__name__} by {method.value}")
