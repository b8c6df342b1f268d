"""XML-DSig primitives: digests, and canonicalization of a subtree."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from lxml import etree

from signing.xmldsig import C14N, Digest, canonicalize, digest

# A default namespace and unused prefixes above the subtrees, comments, a PI, tails, xml:lang.
DOCUMENT = b"""<?xml version="1.0"?>
<!-- before --><r xmlns="urn:default" xmlns:u="urn:unused" xmlns:p="urn:p" xml:lang="en">
  <p:a  z="1" a="&#13;2"><b>text &amp; more<!-- inside --><?pi data?><c p:at="v"/></b></p:a> tail
  <d xmlns=""><e xmlns:q="urn:q"><q:f/></e></d>
  <g xmlns:u="urn:other"><u:h>x</u:h></g>
</r><!-- after -->"""


def _subtrees() -> list[etree._Element]:
    return [e for e in etree.fromstring(DOCUMENT).iterdescendants() if isinstance(e.tag, str)]


@pytest.mark.parametrize("method", list(C14N))
@pytest.mark.parametrize("with_comments", [None, False, True])
def test_a_subtree_is_canonicalized_as_its_own_document(method, with_comments):
    """As if the element were serialized (every in-scope namespace declared) and read back."""
    for element in _subtrees():
        alone = etree.fromstring(etree.tostring(element, with_tail=False))
        comments = method.with_comments if with_comments is None else with_comments
        expected = etree.tostring(
            alone, method="c14n", exclusive=method.exclusive, with_comments=comments
        )
        assert canonicalize(element, method, with_comments=with_comments) == expected


def test_grandchildren_keep_the_default_namespace_of_an_ancestor():
    a = _subtrees()[0]
    octets = canonicalize(a, C14N.EXC)
    assert octets.startswith(b'<p:a xmlns:p="urn:p" a="&#xD;2" z="1"><b xmlns="urn:default">')
    assert b'xmlns=""' not in octets


@pytest.mark.parametrize("method", list(Digest))
def test_each_digest_is_the_algorithm_its_uri_names(method):
    data = bytes(range(256)) * 9
    h = hashes.Hash(getattr(hashes, method.name)())
    h.update(data)
    assert digest(data, method) == h.finalize()
