"""A streaming parser for ``multipart/related`` bodies (RFC 2387, syntax of RFC 2046).

The intake reads an envelope and its attachments from one HTTP body without
ever holding a whole part in memory: the body arrives as byte chunks (the
WSGI input read piece by piece), and each part's content leaves as chunks
too. The parser keeps a rolling buffer of at most one chunk plus the
delimiter's length.

It is strict, because what it reads is hostile until verified: every part
carries a Content-ID (angle brackets stripped), no two the same; only the
identity transfer encodings (binary, 8bit, 7bit) are accepted; header blocks
and the part count are bounded; and a body that ends before its closing
delimiter (a dropped upload) is an error, never a short last part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from signing.errors import InputError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_PARTS",
    "MultipartCutShort",
    "MultipartError",
    "Part",
    "TooManyParts",
    "iter_parts",
    "parse_content_type",
    "related_boundary",
]

MAX_HEADER_BYTES = 16 * 1024  # one part's header block, and the preamble
MAX_PARTS = 1000
IDENTITY_ENCODINGS = frozenset({"binary", "8bit", "7bit"})

CRLF = b"\r\n"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 (an RFC 9110 token, no secret)
_PARAM = re.compile(
    rf'\s*;\s*(?P<name>{_TOKEN})\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>{_TOKEN}))\s*'
)
_MEDIA_TYPE = re.compile(rf"\s*(?P<type>{_TOKEN}/{_TOKEN})\s*")
# RFC 2046 bchars: 1 to 70 of them, not ending with a space.
MAX_CONTENT_ID = 255
BOUNDARY_SYNTAX = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_HEADER_NAME = re.compile(rf"^{_TOKEN}$")


class MultipartError(InputError):
    """The multipart body (or its Content-Type) is malformed, cut short or beyond the bounds."""


class MultipartCutShort(MultipartError):
    """The body ended before its closing delimiter: a dropped upload, not a malformed one."""


class TooManyParts(MultipartError):
    """The body has more parts than the parser was allowed to read."""


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``(media type in lower case, parameters by lower-case name)``; MultipartError if bad."""
    match = _MEDIA_TYPE.match(value)
    if match is None:
        raise MultipartError(f"the Content-Type {value!r} is not a media type")
    params: dict[str, str] = {}
    position = match.end()
    while position < len(value):
        param = _PARAM.match(value, position)
        if param is None:
            raise MultipartError(f"the Content-Type {value!r} has a malformed parameter")
        name = param["name"].lower()
        if name in params:
            raise MultipartError(f"the Content-Type {value!r} repeats the parameter {name}")
        quoted = param["quoted"]
        params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else param["token"]
        position = param.end()
    return match["type"].lower(), params


def related_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/related`` Content-Type; MultipartError if it has none."""
    media_type, params = parse_content_type(content_type)
    if media_type != "multipart/related":
        raise MultipartError(f"expected multipart/related, got {media_type}")
    boundary = params.get("boundary")
    if not boundary:
        raise MultipartError("the multipart/related Content-Type has no boundary parameter")
    if not BOUNDARY_SYNTAX.match(boundary):
        raise MultipartError(
            "the multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? "
            "and must not end with a space (RFC 2046)"
        )
    return boundary


@dataclass
class Part:
    """One body part: its headers and its content, as chunks to be read once, in order.

    ``body`` must be read before the next part is asked for; whatever is left
    unread is skipped then.
    """

    index: int
    content_id: str
    content_type: str
    media_type: str
    headers: dict[str, str]
    body: Iterator[bytes] = field(repr=False)


def iter_parts(
    boundary: str,
    chunks: Iterable[bytes],
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_parts: int = MAX_PARTS,
) -> Iterator[Part]:
    """The parts of a multipart body read from ``chunks``, each streamed.

    Raises ``MultipartError`` (while iterating, or while reading a part's
    body) for a missing or unclosed boundary, malformed headers, a part
    without Content-ID, a repeated Content-ID, an encoding other than binary,
    8bit or 7bit, or too many parts.
    """
    if not boundary:
        raise MultipartError("no multipart boundary was given")
    return _Parser(boundary.encode("ascii"), chunks, max_header_bytes, max_parts).parts()


class _Parser:
    def __init__(
        self, boundary: bytes, chunks: Iterable[bytes], max_header_bytes: int, max_parts: int
    ) -> None:
        self._delimiter = CRLF + b"--" + boundary
        self._source = iter(chunks)
        # The first delimiter may open the body; a virtual CRLF lets one search find it.
        self._buffer = bytearray(CRLF)
        self._eof = False
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts

    # ---- reading ------------------------------------------------------------

    def _fill(self) -> bool:
        """Append the next non-empty chunk; False at the end of the input."""
        while not self._eof:
            try:
                chunk = next(self._source)
            except StopIteration:
                self._eof = True
                break
            if chunk:
                self._buffer += chunk
                return True
        return False

    def _cut_short(self, where: str) -> MultipartError:
        return MultipartCutShort(
            f"the body ended {where}, before the closing boundary: the upload was cut short"
        )

    # ---- structure ----------------------------------------------------------

    def parts(self) -> Iterator[Part]:
        self._skip_preamble()
        seen: set[str] = set()
        index = 0
        while self._after_delimiter():
            if index >= self._max_parts:
                raise TooManyParts(f"the body has more than {self._max_parts} parts")
            headers = self._headers(index)
            part = self._part(index, headers, seen)
            yield part
            for _ in part.body:  # skip what the caller left unread
                pass
            index += 1
        if index == 0:
            raise MultipartError("the multipart body has no parts")
        self._drain_epilogue()

    def _skip_preamble(self) -> None:
        keep = len(self._delimiter) - 1
        skipped = 0
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0:
                del self._buffer[: found + len(self._delimiter)]
                return
            if len(self._buffer) > keep:
                skipped += len(self._buffer) - keep
                del self._buffer[:-keep]
            if skipped > self._max_header_bytes:
                raise MultipartError(
                    "the body does not start with its boundary (garbage, or the wrong boundary)"
                )
            if not self._fill():
                raise MultipartError("the body holds no multipart boundary")

    def _after_delimiter(self) -> bool:
        """Read what follows a delimiter: True if a part follows, False if it closed the body."""
        while True:
            rest = bytes(self._buffer).lstrip(b" \t")  # transport padding
            if len(rest) >= 2:
                if rest.startswith(b"--"):
                    del self._buffer[:]
                    return False
                if rest.startswith(CRLF):
                    del self._buffer[: len(self._buffer) - len(rest) + 2]
                    return True
                raise MultipartError(
                    "a boundary is followed by something other than a line break or '--' "
                    "(garbage, or a boundary that occurs inside a part)"
                )
            if len(self._buffer) > self._max_header_bytes:
                raise MultipartError("a boundary is followed by too much padding")
            if not self._fill():
                raise self._cut_short("right after a boundary")

    def _headers(self, index: int) -> dict[str, str]:
        start = 0
        while True:
            if self._buffer.startswith(CRLF):
                del self._buffer[:2]
                return {}
            end = self._buffer.find(CRLF + CRLF, start)
            if end >= 0:
                block = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                if len(block) > self._max_header_bytes:
                    break
                return _parse_headers(block, index)
            start = max(0, len(self._buffer) - 3)
            if len(self._buffer) > self._max_header_bytes:
                break
            if not self._fill():
                raise self._cut_short(f"inside the headers of part {index + 1}")
        raise MultipartError(
            f"the headers of part {index + 1} are longer than {self._max_header_bytes} bytes "
            "or are not ended by an empty line"
        )

    def _part(self, index: int, headers: dict[str, str], seen: set[str]) -> Part:
        raw_id = headers.get("content-id", "").strip()
        if not raw_id:
            raise MultipartError(f"part {index + 1} has no Content-ID")
        content_id = raw_id[1:-1] if raw_id.startswith("<") and raw_id.endswith(">") else raw_id
        if not content_id:
            raise MultipartError(f"part {index + 1} has an empty Content-ID")
        if len(content_id) > MAX_CONTENT_ID:
            # It names the part in the store, as the signed manifest's ContentId does.
            raise MultipartError(
                f"part {index + 1} has a Content-ID of {len(content_id)} characters; "
                f"at most {MAX_CONTENT_ID} are accepted"
            )
        if content_id in seen:
            raise MultipartError(f"two parts have the Content-ID <{content_id}>")
        seen.add(content_id)
        encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
        if encoding not in IDENTITY_ENCODINGS:
            raise MultipartError(
                f"part <{content_id}> has Content-Transfer-Encoding {encoding}; "
                "only binary, 8bit and 7bit are accepted"
            )
        content_type = headers.get("content-type", "text/plain").strip()
        try:
            media_type, _ = parse_content_type(content_type)
        except MultipartError as exc:
            raise MultipartError(f"part <{content_id}>: {exc}") from None
        return Part(index, content_id, content_type, media_type, headers, self._body(content_id))

    def _body(self, content_id: str) -> Iterator[bytes]:
        keep = len(self._delimiter) - 1
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0:
                if found:
                    yield bytes(self._buffer[:found])
                del self._buffer[: found + len(self._delimiter)]
                return
            if len(self._buffer) > keep:
                out = bytes(self._buffer[:-keep])
                del self._buffer[:-keep]
                yield out
            if not self._fill():
                raise self._cut_short(f"inside part <{content_id}>")

    def _drain_epilogue(self) -> None:
        # Ignored (RFC 2046), but read so that the input is consumed.
        while self._fill():
            del self._buffer[:]


def _parse_headers(block: bytes, index: int) -> dict[str, str]:
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MultipartError(f"the headers of part {index + 1} are not ASCII") from None
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # folded continuation (RFC 5322)
        else:
            lines.append(line)
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.match(name):
            raise MultipartError(f"part {index + 1} has a malformed header line {line[:80]!r}")
        key = name.lower()
        if key in headers:
            raise MultipartError(f"part {index + 1} repeats the header {name}")
        headers[key] = value.strip()
    return headers
