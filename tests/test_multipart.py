"""The streaming multipart/related parser: structure, bounds, and every malformed body."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.multipart import (
    MultipartError,
    Part,
    iter_parts,
    parse_content_type,
    related_boundary,
)

BOUNDARY = "rogatory-7d1f0c"


def build(
    parts: list[tuple[dict[str, str], bytes]],
    *,
    boundary: str = BOUNDARY,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
) -> bytes:
    out = [preamble]
    for headers, body in parts:
        out.append(f"--{boundary}\r\n".encode())
        out.extend(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        out.append(b"\r\n" + body + b"\r\n")
    if close:
        out.append(f"--{boundary}--\r\n".encode() + epilogue)
    return b"".join(out)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(data: bytes, size: int | None = None, **kwargs: int) -> list[tuple[Part, bytes]]:
    source = chunked(data, size or max(1, len(data)))
    return [(p, b"".join(p.body)) for p in iter_parts(BOUNDARY, source, **kwargs)]


def part(
    cid: str, body: bytes, media_type: str = "application/octet-stream"
) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": media_type, "Content-ID": f"<{cid}>"}, body


# A body that puts the parser's edge cases together: the delimiter's prefix
# inside content, CRs and LFs at the part's ends, an empty part, binary.
TRICKY = [
    part("envelope@x", b"<Envelope/>", "application/xml; charset=utf-8"),
    part("a@x", b"\r\n--rogatory-7d1f0\r\n--rogatory-7d1f\r\n-rogatory-7d1f0c\r-\n", "text/plain"),
    part("empty@x", b""),
    part("bin@x", bytes(range(256)) * 3 + b"\r"),
]


def test_reads_parts_headers_and_bodies() -> None:
    got = read(build(TRICKY))
    assert [p.content_id for p, _ in got] == ["envelope@x", "a@x", "empty@x", "bin@x"]
    assert [body for _, body in got] == [body for _, body in TRICKY]
    envelope = got[0][0]
    assert envelope.media_type == "application/xml"
    assert envelope.content_type == "application/xml; charset=utf-8"
    assert envelope.headers["content-id"] == "<envelope@x>"


@pytest.mark.parametrize("size", [*range(1, 40), 63, 64, 65, 100, 1000, 10**6])
def test_any_chunking_gives_the_same_parts(size: int) -> None:
    data = build(TRICKY, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")
    whole = [(p.content_id, p.headers, body) for p, body in read(data)]
    assert [(p.content_id, p.headers, body) for p, body in read(data, size)] == whole


def test_random_bodies_under_random_chunkings() -> None:
    rng = __import__("random").Random(2387)
    for _ in range(200):
        bodies = [os.urandom(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 5))]
        # Delimiter fragments inside content stress the rolling buffer.
        bodies = [b.replace(b"\x00", b"\r\n--rogatory") for b in bodies]
        data = build([part(f"p{i}@x", b) for i, b in enumerate(bodies)])
        size = rng.randrange(1, len(data) + 1)
        assert [body for _, body in read(data, size)] == bodies


def test_memory_is_bounded_by_chunk_and_boundary() -> None:
    big = 4 * 1024 * 1024
    data_chunks = 0

    def source() -> Iterator[bytes]:
        nonlocal data_chunks
        yield f"--{BOUNDARY}\r\nContent-ID: <big@x>\r\n\r\n".encode()
        for _ in range(big // 65536):
            data_chunks += 1
            yield b"x" * 65536
        yield f"\r\n--{BOUNDARY}--".encode()

    largest = total = 0
    for p in iter_parts(BOUNDARY, source()):
        for chunk in p.body:
            largest = max(largest, len(chunk))
            total += len(chunk)
    assert total == big
    assert largest <= 65536 + len(BOUNDARY) + 4


def test_unread_bodies_are_skipped() -> None:
    parts = iter_parts(BOUNDARY, [build(TRICKY)])
    assert [p.content_id for p in parts] == ["envelope@x", "a@x", "empty@x", "bin@x"]


def test_transport_padding_after_a_boundary_is_allowed() -> None:
    data = build([part("a@x", b"A")]).replace(
        f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY} \t\r\n".encode()
    )
    assert [body for _, body in read(data)] == [b"A"]


def test_folded_headers_are_unfolded() -> None:
    data = f"--{BOUNDARY}\r\nContent-ID:\r\n <a@x>\r\n\r\nA\r\n--{BOUNDARY}--".encode()
    assert [p.content_id for p, _ in read(data)] == ["a@x"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "holds no multipart boundary"),
        (b"just some bytes that are not multipart", "holds no multipart boundary"),
        (os.urandom(1) * 40000, "does not start with its boundary"),
        (build([part("a@x", b"A")], close=False), "cut short"),
        (build([part("a@x", b"A")], close=False)[:-10], "cut short"),
        (f"--{BOUNDARY}\r\nContent-ID: <a@x>".encode(), "cut short"),
        (f"--{BOUNDARY}".encode(), "cut short"),
        (f"--{BOUNDARY}--".encode(), "no parts"),
        (f"--{BOUNDARY}garbage\r\n".encode(), "followed by something other"),
        (build([({"Content-Type": "text/plain"}, b"A")]), "has no Content-ID"),
        (build([({"Content-ID": "<>"}, b"A")]), "empty Content-ID"),
        (build([part("a@x", b"A"), part("a@x", b"B")]), "two parts have the Content-ID <a@x>"),
        (
            build([({"Content-ID": "<a@x>", "Content-Transfer-Encoding": "base64"}, b"QQ==")]),
            "only binary, 8bit and 7bit",
        ),
        (f"--{BOUNDARY}\r\nno colon here\r\n\r\nA\r\n--{BOUNDARY}--".encode(), "malformed header"),
        (
            build([({"Content-ID": "<a@x>", "content-id": "<b@x>"}, b"A")]),
            "repeats the header",
        ),
        (
            f"--{BOUNDARY}\r\nContent-ID: <\xe9@x>\r\n\r\nA\r\n--{BOUNDARY}--".encode("latin-1"),
            "not ASCII",
        ),
        (
            build([({"Content-ID": "<a@x>", "Content-Type": "not a type"}, b"A")]),
            "not a media type",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    for size in (1, 7, len(data) or 1):
        with pytest.raises(MultipartError, match=reason):
            read(data, size)


def test_header_block_is_bounded() -> None:
    data = build([({"Content-ID": "<a@x>", "X-Padding": "p" * 5000}, b"A")])
    assert len(read(data, 100, max_header_bytes=8000)) == 1
    with pytest.raises(MultipartError, match="longer than 4000 bytes"):
        read(data, 100, max_header_bytes=4000)


def test_unterminated_headers_fail_at_the_bound_not_at_the_end() -> None:
    def endless() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-ID: <a@x>\r\nX: ".encode()
        while True:
            yield b"y" * 1024

    with pytest.raises(MultipartError, match="longer than"):
        list(iter_parts(BOUNDARY, endless()))


def test_part_count_is_bounded() -> None:
    data = build([part(f"p{i}@x", b"") for i in range(6)])
    assert len(read(data, max_parts=6)) == 6
    with pytest.raises(MultipartError, match="more than 5 parts"):
        read(data, max_parts=5)


def test_content_type_parameters() -> None:
    value = 'Multipart/Related; type="application/xml"; boundary="a b\\"c"; start="<e@x>"'
    assert parse_content_type(value) == (
        "multipart/related",
        {"type": "application/xml", "boundary": 'a b"c', "start": "<e@x>"},
    )
    assert related_boundary(f"multipart/related; boundary={BOUNDARY}") == BOUNDARY


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("multipart/related", "no boundary"),
        ('multipart/related; boundary=""', "no boundary"),
        ("multipart/mixed; boundary=x", "expected multipart/related"),
        ("multipart/related; boundary=" + "b" * 71, "1 to 70"),
        ('multipart/related; boundary="ends in space "', "1 to 70"),
        ("multipart/related; boundary=a; boundary=b", "repeats the parameter"),
        ("multipart/related; boundary", "malformed parameter"),
        ("", "not a media type"),
    ],
)
def test_bad_content_types(value: str, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason):
        related_boundary(value)


def test_no_boundary_argument() -> None:
    with pytest.raises(MultipartError, match="no multipart boundary"):
        iter_parts("", [b""])
