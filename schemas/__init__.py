"""Package data: the envelope, evidence and notice schemas, and example envelopes."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

ENVELOPE_NS = "urn:rogatory:envelope:1"
EVIDENCE_NS = "urn:rogatory:evidence:1"
NOTICE_NS = "urn:rogatory:notice:1"

_SCHEMA_FILE = "envelope-1.xsd"


@functools.cache  # looked up for every envelope validated
def _resource(name: str) -> Path:
    # Rogatory is never installed zipped: a real path lets callers open and glob.
    return Path(str(files(__name__) / name))


def schema_path() -> Path:
    """Path of the envelope XSD (namespace ``ENVELOPE_NS``)."""
    return _resource(_SCHEMA_FILE)


def evidence_schema_path() -> Path:
    """Path of the evidence XSD (namespace ``EVIDENCE_NS``)."""
    return _resource("evidence-1.xsd")


def notice_schema_path() -> Path:
    """Path of the channel-override notice XSD (namespace ``NOTICE_NS``)."""
    return _resource("notice-1.xsd")


def examples_dir() -> Path:
    """Directory of the unsigned example envelopes, one per request type."""
    return _resource("examples")
