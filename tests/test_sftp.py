"""The SFTP channel against a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.base import (
    Incoming,
    Outgoing,
    OutgoingNotice,
    OutgoingPart,
    PermanentError,
    TransientError,
)
from adapters.sftp import SftpAdapter
from gateway.channels import SftpChannel
from gateway.pki import DevPKI
from signing.keys import Signer
from tests.gateway_process import free_port
from tests.sshd import SSHD, Sshd, keygen, openssh_fingerprint, public_key_line
from tests.test_notice import NOTICE_ABOUT, notice_for

pytestmark = pytest.mark.skipif(
    not SSHD.exists(), reason=f"OpenSSH's {SSHD} is not installed (apt-get install openssh-server)"
)

PDF = b"%PDF-1.7\n" + b"stands in for a signed request\n" * 40
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture()
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of the test's own, not started yet, to restart or give other keys."""
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


@pytest.fixture()
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


def channel(
    server: Sshd, folder: Path, *, host_key: str | None = None, port: int | None = None
) -> SftpChannel:
    return SftpChannel(
        host="127.0.0.1",
        port=port or server.port,
        user=server.user,
        folder=str(folder),
        inbound_folder=str(folder),
        host_key=server.host_key_line if host_key is None else host_key,
    )


AdapterFor = Callable[..., SftpAdapter]


@pytest.fixture()
def adapter_for(sshd: Sshd, drop: Path) -> Iterator[AdapterFor]:
    """Adapters on the shared sshd that send to and poll ``drop``; closed at teardown."""
    made: list[SftpAdapter] = []

    def make(
        *,
        host_key: str | None = None,
        port: int | None = None,
        client_key: Path | None = None,
        timeout: float = 5,
        max_incoming_bytes: int = 64 * MIB,
    ) -> SftpAdapter:
        made.append(
            SftpAdapter(
                channel(sshd, drop, host_key=host_key, port=port),
                client_key=client_key or sshd.client_key,
                authority_id="AR-MJ",
                timeout=timeout,
                max_incoming_bytes=max_incoming_bytes,
            )
        )
        return made[-1]

    yield make
    for adapter in made:
        adapter.close()


def part(
    content_id: str, data: bytes, opener: Callable[[], io.BytesIO] | None = None
) -> OutgoingPart:
    return OutgoingPart(
        content_id=content_id,
        media_type="application/pdf",
        file_name=None,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        open=opener or (lambda: io.BytesIO(data)),
    )


def message(message_id: str = "m-1", *parts: OutgoingPart, envelope: bytes = b"") -> Outgoing:
    return Outgoing(
        message_id=message_id,
        envelope=envelope or f"<Envelope id='{message_id}'/>".encode(),
        attachments=parts,
    )


class Tripwire(io.BytesIO):
    """An attachment stream that calls ``trip`` once ``after`` bytes have been read, and
    remembers every read size: a whole-file read() fails the test."""

    def __init__(self, data: bytes, after: int, trip: Callable[[], None]) -> None:
        super().__init__(data)
        self.after, self.trip, self.sizes = after, trip, list[int]()

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size > 0, "the adapter read a whole attachment at once"
        self.sizes.append(size)
        chunk = super().read(size)
        if self.tell() >= self.after and self.trip is not None:
            trip, self.trip = self.trip, None  # type: ignore[assignment]
            trip()
        return chunk


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def make_drop(folder: Path, name: str, envelope: bytes = b"<Envelope/>", **files: bytes) -> Path:
    path = folder / name
    path.mkdir()
    (path / "envelope.xml").write_bytes(envelope)
    for file_name, data in files.items():
        (path / file_name).write_bytes(data)
    return path


# -- sending ----------------------------------------------------------------------


def test_send_then_fetch_gives_back_the_same_bytes(
    adapter_for: AdapterFor, drop: Path, envelope: bytes
) -> None:
    adapter = adapter_for()
    note = os.urandom(3000)
    receipt = adapter.send(
        message("m-1", part("request.pdf", PDF), part("note", note), envelope=envelope)
    )

    assert receipt.reference == f"{drop}/m-1"
    assert entries(drop) == {"m-1"}  # no hidden .part left behind
    assert entries(drop / "m-1") == {"envelope.xml", "request.pdf", "note"}

    (incoming,) = adapter_for().fetch()
    assert incoming.problem is None
    assert incoming.reference == f"{drop}/m-1"
    assert incoming.channel_sender == "AR-MJ"
    assert incoming.envelope == envelope
    got = {p.content_id: (p.media_type, p.data) for p in incoming.attachments}
    assert got == {
        "request.pdf": ("application/pdf", PDF),
        "note": ("application/octet-stream", note),
    }


def test_a_large_attachment_is_streamed_in_chunks(adapter_for: AdapterFor, drop: Path) -> None:
    data = b"%PDF-1.7\n" + os.urandom(12 * MIB)
    stream = Tripwire(data, after=len(data) + 1, trip=lambda: None)
    started = time.monotonic()
    adapter_for().send(message("big", part("scan.pdf", data, lambda: stream)))

    assert max(stream.sizes) <= MIB and len(stream.sizes) > 10
    assert (drop / "big" / "scan.pdf").read_bytes() == data
    (incoming,) = adapter_for().fetch()
    assert incoming.attachments[0].data == data
    assert time.monotonic() - started < 20


def test_a_resend_returns_the_receipt_and_leaves_one_copy(
    adapter_for: AdapterFor, drop: Path
) -> None:
    first = adapter_for().send(message("m-1", part("a.pdf", PDF), envelope=b"<first/>"))
    # The gateway crashed before it recorded the receipt; a new process sends again.
    again = adapter_for().send(message("m-1", part("a.pdf", b"%PDF-other"), envelope=b"<again/>"))

    assert again == first
    assert entries(drop) == {"m-1"}
    assert (drop / "m-1" / "envelope.xml").read_bytes() == b"<first/>"
    assert (drop / "m-1" / "a.pdf").read_bytes() == PDF


def test_a_copy_that_arrives_during_the_upload_wins(adapter_for: AdapterFor, drop: Path) -> None:
    def other_attempt_lands() -> None:
        make_drop(drop, "m-1", b"<other attempt/>")

    stream = Tripwire(PDF, after=10, trip=other_attempt_lands)
    receipt = adapter_for().send(message("m-1", part("a.pdf", PDF, lambda: stream)))

    assert receipt.reference == f"{drop}/m-1"
    assert entries(drop) == {"m-1"}
    assert entries(drop / "m-1") == {"envelope.xml"}  # not merged, not replaced


@pytest.mark.parametrize("failure", ["connection dropped", "sshd killed"])
def test_a_transfer_cut_off_leaves_nothing_under_the_final_name(
    own_sshd: Sshd, drop: Path, failure: str
) -> None:
    server = own_sshd.start()
    ch = channel(server, drop)
    adapter = SftpAdapter(ch, client_key=server.client_key, authority_id="AR-MJ", timeout=5)
    cut = server.drop_connections if failure == "connection dropped" else server.stop
    data = os.urandom(8 * MIB)
    stream = Tripwire(data, after=MIB, trip=cut)

    with pytest.raises(TransientError) as raised:
        adapter.send(message("m-1", part("scan.pdf", data, lambda: stream)))
    assert f"127.0.0.1:{server.port}" in str(raised.value)
    assert "m-1" not in entries(drop)
    assert all(name.startswith(".m-1.") and name.endswith(".part") for name in entries(drop))

    if failure == "sshd killed":
        server.start()
    reader = SftpAdapter(ch, client_key=server.client_key, authority_id="AR-MJ", timeout=5)
    assert list(reader.fetch()) == []  # the hidden .part is not a message
    reader.close()

    adapter.send(message("m-1", part("scan.pdf", data)))
    assert entries(drop) == {"m-1"}  # delivered, and the .part cleaned away on reconnect
    assert (drop / "m-1" / "scan.pdf").read_bytes() == data
    adapter.close()


def test_a_local_read_error_mid_upload_removes_the_partial_copy(
    adapter_for: AdapterFor, drop: Path
) -> None:
    def disk_fails() -> None:
        raise OSError(5, "Input/output error")

    adapter = adapter_for()
    stream = Tripwire(os.urandom(2 * MIB), after=MIB, trip=disk_fails)
    with pytest.raises(TransientError, match=r"'scan\.pdf' could not be read: Input/output error"):
        adapter.send(message("m-1", part("scan.pdf", stream.getvalue(), lambda: stream)))
    assert entries(drop) == set()

    adapter.send(message("m-1", part("scan.pdf", PDF)))
    assert entries(drop) == {"m-1"}


def test_an_attachment_that_differs_from_its_manifest_entry_is_not_sent(
    adapter_for: AdapterFor, drop: Path
) -> None:
    tampered = part("a.pdf", PDF, lambda: io.BytesIO(PDF.replace(b"signed", b"forged")))
    with pytest.raises(PermanentError, match="does not match its manifest entry"):
        adapter_for().send(message("m-1", tampered))
    assert entries(drop) == set()


@pytest.mark.parametrize(
    "content_id",
    ["../escape", "a/b", ".hidden", "", "line\nbreak", "tab\there", "é" * 128, "envelope.xml"],
)
def test_a_content_id_that_is_no_safe_file_name_is_refused(
    adapter_for: AdapterFor, drop: Path, content_id: str
) -> None:
    with pytest.raises(PermanentError, match="cannot be a file name"):
        adapter_for().send(message("m-1", part(content_id, PDF)))
    assert entries(drop) == set()


def test_two_attachments_with_one_content_id_are_refused(
    adapter_for: AdapterFor, drop: Path
) -> None:
    with pytest.raises(PermanentError, match="another attachment has it"):
        adapter_for().send(message("m-1", part("a.pdf", PDF), part("a.pdf", PDF)))
    assert entries(drop) == set()


def test_a_folder_we_may_not_write_to_is_a_permanent_error(tmp_path: Path, drop: Path) -> None:
    with Sshd(tmp_path / "ro", sftp_flags="-R") as read_only:
        ch = channel(read_only, drop)
        adapter = SftpAdapter(ch, client_key=read_only.client_key, authority_id="AR-MJ", timeout=5)
        with pytest.raises(PermanentError, match=f"{read_only.port}.*{drop}.*permission denied"):
            adapter.send(message("m-1", part("a.pdf", PDF)))
        adapter.close()
    assert entries(drop) == set()


def test_a_missing_folder_is_a_permanent_error(adapter_for: AdapterFor, drop: Path) -> None:
    drop.rmdir()
    with pytest.raises(PermanentError, match=f"the folder {drop} does not exist"):
        adapter_for().send(message("m-1"))


# -- who is at the other end --------------------------------------------------------


def test_a_changed_host_key_is_refused_before_logging_in(own_sshd: Sshd, drop: Path) -> None:
    server = own_sshd.start()
    ch = channel(server, drop)  # pins the key it has now
    before = SftpAdapter(ch, client_key=server.client_key, authority_id="AR-MJ")
    before.send(message("m-0"))
    before.close()
    old = openssh_fingerprint(server.host_keys[0])

    server.stop()
    keygen(server.host_keys[0])  # the same address now answers with another key
    server.start()
    new = openssh_fingerprint(server.host_keys[0])
    log_start = len(server.log_text())
    adapter = SftpAdapter(ch, client_key=server.client_key, authority_id="AR-MJ", timeout=5)

    with pytest.raises(PermanentError) as raised:
        adapter.send(message("m-1", part("a.pdf", PDF)))
    assert f"presented host key ssh-ed25519 {new}, not the pinned ssh-ed25519 {old}" in str(
        raised.value
    )
    assert entries(drop) == {"m-0"}
    session = server.log_text()[log_start:]
    assert "Connection from 127.0.0.1" in session
    assert "publickey" not in session and "Accepted" not in session  # we never offered our key


def test_a_pin_of_another_key_type_is_refused(own_sshd: Sshd, drop: Path, tmp_path: Path) -> None:
    server = own_sshd.start()  # it has an ed25519 host key only
    other = keygen(tmp_path / "other_ecdsa", "ecdsa")
    ch = channel(server, drop, host_key=public_key_line(other))
    adapter = SftpAdapter(ch, client_key=server.client_key, authority_id="AR-MJ", timeout=5)

    with pytest.raises(PermanentError) as raised:
        adapter.send(message("m-1"))
    presented = openssh_fingerprint(server.host_keys[0])
    pinned = openssh_fingerprint(other)
    assert f"ssh-ed25519 {presented}, not the pinned ecdsa-sha2-nistp256 {pinned}" in str(
        raised.value
    )
    assert entries(drop) == set()


def test_the_pinned_key_is_asked_for_when_the_server_has_several(
    own_sshd: Sshd, drop: Path
) -> None:
    own_sshd.host_keys.append(keygen(own_sshd.directory / "host_ecdsa", "ecdsa"))
    server = own_sshd.start()
    ecdsa = public_key_line(server.host_keys[1])
    adapter = SftpAdapter(
        channel(server, drop, host_key=ecdsa), client_key=server.client_key, authority_id="AR-MJ"
    )
    adapter.send(message("m-1"))
    adapter.close()
    assert entries(drop) == {"m-1"}


@pytest.mark.parametrize(
    "pin", ["", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA=="]
)
def test_no_valid_pin_is_refused_naming_the_key_presented(
    adapter_for: AdapterFor, sshd: Sshd, drop: Path, pin: str
) -> None:
    with pytest.raises(PermanentError) as raised:
        adapter_for(host_key=pin).send(message("m-1"))
    assert openssh_fingerprint(sshd.host_keys[0]) in str(raised.value)
    assert "pins no valid host key" in str(raised.value)
    assert entries(drop) == set()


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_ecdsa_and_rsa_client_keys_log_in(
    adapter_for: AdapterFor, sshd: Sshd, drop: Path, tmp_path: Path, kind: str
) -> None:
    key = keygen(tmp_path / f"client_{kind}", kind)
    sshd.authorize(key)
    adapter_for(client_key=key).send(message("m-1"))
    assert entries(drop) == {"m-1"}


def test_a_client_key_the_server_does_not_know_is_a_permanent_error(
    adapter_for: AdapterFor, sshd: Sshd, drop: Path, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(PermanentError, match=f"refused client key .* for user {sshd.user}"):
        adapter_for(client_key=stranger).send(message("m-1"))
    with pytest.raises(PermanentError, match="cannot be used"):
        adapter_for(client_key=tmp_path / "missing").send(message("m-1"))
    assert entries(drop) == set()


def test_a_server_that_is_down_is_a_transient_error(adapter_for: AdapterFor) -> None:
    port = free_port()  # nothing listens there
    adapter = adapter_for(port=port)
    with pytest.raises(
        TransientError, match=f"127.0.0.1:{port}.*cannot connect: Connection refused"
    ):
        adapter.send(message("m-1"))
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        list(adapter.fetch())


def test_a_server_that_never_answers_is_a_transient_error(adapter_for: AdapterFor) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts the connection; nobody speaks SSH
        adapter = adapter_for(port=silent.getsockname()[1], timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TransientError, match=f"127.0.0.1:{silent.getsockname()[1]}"):
            adapter.send(message("m-1"))
        assert time.monotonic() - started < 3


# -- polling ------------------------------------------------------------------------


def test_fetch_ignores_hidden_folders_and_what_was_answered(
    adapter_for: AdapterFor, drop: Path
) -> None:
    make_drop(drop, "m-1", b"<one/>", **{"a.pdf": PDF})
    make_drop(drop, ".m-2.5f3a.part")
    make_drop(drop, ".hidden")
    (drop / "processed").mkdir()
    make_drop(drop / "processed", "m-0")
    (drop / "rejected").mkdir()

    (incoming,) = adapter_for().fetch()
    assert incoming.reference == f"{drop}/m-1"
    assert incoming.envelope == b"<one/>"
    assert [(p.content_id, p.data) for p in incoming.attachments] == [("a.pdf", PDF)]


def test_fetch_stops_at_the_limit(adapter_for: AdapterFor, drop: Path) -> None:
    for n in range(3):
        make_drop(drop, f"m-{n}")
    assert len(list(adapter_for().fetch(limit=2))) == 2


def test_one_fetch_holds_about_max_incoming_bytes_at_most(
    adapter_for: AdapterFor, drop: Path
) -> None:
    for n in range(3):
        make_drop(drop, f"m-{n}", **{"scan.pdf": b"%PDF-" + bytes(6000)})
    adapter = adapter_for(max_incoming_bytes=10_000)

    first = list(adapter.fetch())
    assert len(first) == 2 and all(i.problem is None for i in first)
    for incoming in first:
        adapter.acknowledge(incoming, "accepted")
    (last,) = adapter.fetch()  # the third waited for the next poll
    assert last.problem is None and last.reference not in {i.reference for i in first}


def test_no_inbound_folder_fetches_nothing(sshd: Sshd, drop: Path) -> None:
    ch = SftpChannel(host="127.0.0.1", port=free_port(), user="x", folder="/", host_key="")
    assert list(SftpAdapter(ch, client_key=sshd.client_key, authority_id="AR-MJ").fetch()) == []


def test_acknowledge_moves_aside_and_never_overwrites(adapter_for: AdapterFor, drop: Path) -> None:
    adapter = adapter_for()
    make_drop(drop, "m-1", b"<first/>")
    make_drop(drop, "m-2", b"<bad/>")
    first = {i.reference: i for i in adapter.fetch()}
    adapter.acknowledge(first[f"{drop}/m-1"], "accepted")
    adapter.acknowledge(first[f"{drop}/m-2"], "rejected")
    adapter.acknowledge(first[f"{drop}/m-1"], "accepted")  # again, after a crash: nothing happens

    make_drop(drop, "m-1", b"<sent again/>")  # the counterpart resends the same name
    (again,) = adapter.fetch()
    adapter.acknowledge(again, "accepted")

    assert entries(drop) == {"processed", "rejected"}
    assert entries(drop / "processed") == {"m-1", "m-1.1"}
    assert (drop / "processed" / "m-1" / "envelope.xml").read_bytes() == b"<first/>"
    assert (drop / "processed" / "m-1.1" / "envelope.xml").read_bytes() == b"<sent again/>"
    assert entries(drop / "rejected") == {"m-2"}
    assert list(adapter.fetch()) == []


def test_a_symbolic_link_is_reported_not_followed(
    adapter_for: AdapterFor, drop: Path, tmp_path: Path
) -> None:
    elsewhere = make_drop(tmp_path, "elsewhere", b"<outside the drop/>")
    (drop / "link").symlink_to(elsewhere)
    inner = make_drop(drop, "m-1")
    (inner / "evidence.pdf").symlink_to(elsewhere / "envelope.xml")
    adapter = adapter_for()

    found = {i.reference: i for i in adapter.fetch()}
    link, message_with_link = found[f"{drop}/link"], found[f"{drop}/m-1"]
    assert link.problem and "symbolic link" in link.problem
    assert (
        message_with_link.problem
        and "'evidence.pdf' is a symbolic link" in message_with_link.problem
    )
    assert link.envelope == message_with_link.envelope == b""
    assert link.channel_sender == "AR-MJ"

    adapter.acknowledge(link, "rejected")
    assert (drop / "rejected" / "link").is_symlink()
    assert entries(elsewhere) == {"envelope.xml"}


def test_an_oversized_drop_is_reported_and_the_poll_goes_on(
    adapter_for: AdapterFor, drop: Path
) -> None:
    make_drop(drop, "big", **{"scan.pdf": b"%PDF-" + bytes(20_000)})
    make_drop(drop, "small", **{"a.pdf": PDF})
    found = {i.reference: i for i in adapter_for(max_incoming_bytes=10_000).fetch()}

    big, small = found[f"{drop}/big"], found[f"{drop}/small"]
    assert big.problem and "20016 bytes, more than the limit of 10000" in big.problem
    assert (big.envelope, big.attachments) == (b"", ())
    assert small.problem is None and small.attachments[0].data == PDF


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ("no envelope", "holds no envelope.xml"),
        ("nested folder", "'inner' is not a regular file"),
        ("fifo", "'pipe' is not a regular file"),
        ("hidden file", "'.DS_Store' is not an acceptable file name"),
        ("stray file", "it is not a folder"),
    ],
)
def test_a_malformed_drop_is_reported(
    adapter_for: AdapterFor, drop: Path, shape: str, problem: str
) -> None:
    if shape == "stray file":
        (drop / "m-1").write_bytes(b"<Envelope/>")
    else:
        path = make_drop(drop, "m-1")
        if shape == "no envelope":
            (path / "envelope.xml").unlink()
        elif shape == "nested folder":
            (path / "inner").mkdir()
        elif shape == "fifo":
            os.mkfifo(path / "pipe")
        else:
            (path / ".DS_Store").write_bytes(b"x")

    adapter = adapter_for()
    (incoming,) = adapter.fetch()
    assert isinstance(incoming, Incoming)
    assert incoming.problem and problem in incoming.problem
    assert f"{drop}/m-1" in incoming.problem
    adapter.acknowledge(incoming, "rejected")
    assert entries(drop) == {"rejected"}


# ---- channel-override notices (gateway.notice) ----------------------------------


@pytest.fixture(scope="module")
def gateway_signer(pki: DevPKI) -> Signer:
    return pki.signer("MX-FGR")  # any certificate of the dev PKI serves as the gateway's


def test_a_notice_over_sftp_appears_only_under_its_final_name(
    adapter_for: AdapterFor, drop: Path, gateway_signer: Signer
) -> None:
    adapter = adapter_for()
    notice = notice_for(gateway_signer)
    during: list[set[str]] = []
    write = adapter._put_bytes

    def watched(sftp: object, path: str, data: bytes) -> None:
        write(sftp, path, data)
        during.append(entries(drop))  # written whole, not yet renamed

    adapter._put_bytes = watched  # type: ignore[method-assign]
    receipt = adapter.send_notice(notice)

    assert receipt.reference == f"{drop}/{notice.file_name}"
    [hidden] = during[0]
    assert re.fullmatch(rf"\.{re.escape(notice.file_name)}\.[0-9a-f]{{16}}\.part", hidden)
    assert entries(drop) == {notice.file_name}
    assert (drop / notice.file_name).read_bytes() == notice.document

    # A resend after a crash finds the final name: one copy, the first.
    again = adapter_for().send_notice(
        OutgoingNotice(notice.notice_id, NOTICE_ABOUT, notice.reply_id, b"<other/>",
                       notice.file_name, notice.summary)
    )  # fmt: skip
    assert again == receipt
    assert entries(drop) == {notice.file_name}
    assert (drop / notice.file_name).read_bytes() == notice.document


def test_a_notice_for_a_missing_folder_is_a_permanent_error(
    sshd: Sshd, tmp_path: Path, gateway_signer: Signer
) -> None:
    gone = tmp_path / "gone"
    adapter = SftpAdapter(channel(sshd, gone), client_key=sshd.client_key, authority_id="AR-MJ")
    try:
        with pytest.raises(PermanentError, match="does not exist"):
            adapter.send_notice(notice_for(gateway_signer))
    finally:
        adapter.close()
