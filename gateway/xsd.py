"""XML Schemas, built once per thread under one lock.

An lxml validator keeps its error log on the instance, so threads must not
share one; and libxml2's schema parser is not safe to run in two threads at
once (seen as "xmlSchemaPValAttrNodeValue ... not a built-in type" under
gunicorn's threads), so building is serialized.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from signing.xmlparse import parse_xml

_BUILD_LOCK = threading.Lock()
_per_thread = threading.local()


def schema_for(path: Path) -> etree.XMLSchema:
    """This thread's validator for the XSD at ``path``."""
    cache: dict[Path, etree.XMLSchema] = _per_thread.__dict__.setdefault("schemas", {})
    schema = cache.get(path)
    if schema is None:
        with _BUILD_LOCK:
            schema = etree.XMLSchema(parse_xml(path.read_bytes()))
        cache[path] = schema
    return schema
