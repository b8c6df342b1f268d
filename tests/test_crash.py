"""A real gateway killed at random moments while it accepts: nothing answered is lost.

One gateway process (`python -m gateway serve --dev`, gunicorn with TLS, two
workers) takes signed envelopes from client threads that write down every
answer: envelopes alone, with small attachments, with a broken signature, with
an attachment that does not match the signed manifest. At a random moment the
whole gunicorn process group gets SIGKILL. With the gateway dead, the store
is opened as it was left and checked: every 202 is a message with its history,
evidences, audit entries and its envelope byte for byte; every 4xx answer is
a recorded submission; no message row is half-written; the audit log
verifies. Then the gateway starts again on the same data folder, for the
next round. At the end every message is posted again and must get its first
answer back byte for byte.

The moments are drawn from a seed, printed; replay a failure with
``CRASH_TEST_SEED=<seed> pytest tests/test_crash.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from gateway.audit import AuditLog
from gateway.audit_verify import verify_store
from gateway.blobs import blob_store_for
from gateway.bootstrap import read_demo_tokens
from gateway.db import Database
from gateway.model import Direction, EvidenceType, Status, check_transition
from gateway.pki import load_dev_pki
from gateway.store import MessageStore
from gateway.store_records import messages_table, submissions_table
from schemas import examples_dir
from signing.keys import Signer
from tests.conftest import signer_for
from tests.gateway_process import REPO, GatewayProcess
from tests.test_intake import make_envelope, multipart

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ROUNDS = 6
CLIENTS = 3
POSTS_PER_ROUND = 150  # more than a round can take before its kill
KILL_AFTER = (0.2, 2.0)  # seconds of traffic before the SIGKILL, drawn per round
GATEWAY_ID = "gw-es"
EVIDENCE_CERT = f"{GATEWAY_ID}-evidence"
AFTER_ACCEPTANCE = {Status.ACCEPTED, Status.QUEUED, Status.SENDING, Status.DELIVERED}
INTERNAL_ERROR = 500  # see check_nothing_accepted
KINDS = ("xml", "xml", "attachments", "attachments", "bad-signature", "bad-attachment")


@dataclass
class Post:
    """One submission and what the client saw of it (``error`` if the answer never came)."""

    round: int
    kind: str
    message_id: str
    envelope: bytes
    content_type: str
    body: bytes
    attachments: tuple[tuple[str, bytes], ...] = ()
    status: int | None = None
    answer: bytes | None = None
    location: str | None = None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.kind in ("xml", "attachments")


def build_posts(rng: random.Random, signer: Signer, round_no: int, count: int) -> list[Post]:
    base = (examples_dir() / "mla-request.xml").read_bytes()
    posts = []
    for _ in range(count):
        kind = rng.choice(KINDS)
        message_id = _uuid(rng)
        recipient = rng.choice(("AR-MJ", "CO-FGN"))
        attachments: tuple[tuple[str, bytes], ...] = ()
        if kind in ("attachments", "bad-attachment"):
            attachments = tuple(
                (f"annex-{n}@es-mj", _text(rng, rng.randint(64, 6000)))
                for n in range(1, rng.randint(1, 2) + 1)
            )
        envelope = make_envelope(
            base, signer, message_id=message_id, recipient=recipient,
            attachments=[(cid, "text/plain", data) for cid, data in attachments],
        )  # fmt: skip
        if kind == "bad-signature":
            tampered = envelope.replace(b"<Language>es", b"<Language>pt")
            assert tampered != envelope
            envelope = tampered
        sent = attachments
        if kind == "bad-attachment":  # the manifest promised other bytes
            cid, data = attachments[0]
            sent = ((cid, data[:-1] + bytes([data[-1] ^ 1])), *attachments[1:])
        if sent:
            content_type, body = multipart(envelope, sent)
        else:
            content_type, body = "application/xml", envelope
        posts.append(
            Post(round_no, kind, message_id, envelope, content_type, body, attachments=attachments)
        )
    return posts


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _text(rng: random.Random, size: int) -> bytes:
    return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 \n") for _ in range(size))


def send(session: requests.Session, url: str, token: str, post: Post) -> None:
    try:
        answer = session.post(
            f"{url}/api/v1/messages",
            data=post.body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": post.content_type},
            timeout=20,
            verify=session.verify,  # not REQUESTS_CA_BUNDLE: the dev PKI's root only
        )
    except requests.RequestException as exc:
        post.error = f"{type(exc).__name__}: {exc}"
        return
    post.status, post.answer = answer.status_code, answer.content
    post.location = answer.headers.get("Location")


def client(
    work: queue.Queue[Post], sent: list[Post], stop: threading.Event, url: str, token: str, ca: str
) -> None:
    with requests.Session() as session:
        session.trust_env, session.verify = False, ca  # no proxy, no CA bundle from the env
        while not stop.is_set():
            try:
                post = work.get_nowait()
            except queue.Empty:
                return
            send(session, url, token, post)
            sent.append(post)


# ---- checking the store as the kill left it ----------------------------------


def open_store(data_dir: Path) -> MessageStore:
    db = Database.from_url(f"sqlite:///{data_dir / 'rogatory.db'}", migrate_schema=False)
    audit = AuditLog(db, origin=GATEWAY_ID)
    return MessageStore(db, blob_store_for(db, data_dir), audit, gateway_id=GATEWAY_ID)


def check_answered(store: MessageStore, post: Post) -> None:
    """What the client was told is what the store holds."""
    where = f"round {post.round}, {post.kind} {post.message_id} answered {post.status}"
    assert post.status is not None and post.answer is not None
    if post.valid:
        assert post.status == 202, f"{where}: {post.answer[:600]!r}"
    else:
        assert 400 <= post.status < 500, f"{where}: {post.answer[:600]!r}"
    if post.status == 202:
        first = store.first_answer("ES-MJ", post.message_id)
        assert first is not None, f"{where}: its first answer is lost"
        assert (first.answer.http_status, first.answer.body) == (202, post.answer), where
        message = store.message(post.message_id)
        assert message is not None, f"{where}: the message is lost"
        assert message.status in AFTER_ACCEPTANCE, f"{where}: now {message.status}"
        assert [c.status for c in store.history(post.message_id)][:2] == [
            Status.RECEIVED,
            Status.ACCEPTED,
        ], where
        acceptances = [
            e for e in store.evidences(post.message_id)
            if e.type is EvidenceType.SUBMISSION_ACCEPTANCE
        ]  # fmt: skip
        assert len(acceptances) == 1, where
        assert store.blobs.read(acceptances[0].sha256) == post.answer, where
        assert store.blobs.read(message.envelope_sha256) == post.envelope, where
        stored = {
            a.content_id: store.blobs.read(a.sha256) for a in store.attachments(post.message_id)
        }
        assert stored == dict(post.attachments), where
        return
    assert json.loads(post.answer)["status"] == post.status, where
    # The answer holds a signed rejection evidence: no two refusals have the same body.
    query = sa.select(submissions_table).where(
        submissions_table.c.authority_id == "ES-MJ",
        submissions_table.c.response_body == post.answer,
    )
    with store.db.begin_read() as connection:
        row = connection.execute(query).one_or_none()
    assert row is not None, f"{where}: the refused submission is not recorded"
    assert (row.http_status, bytes(row.response_body)) == (post.status, post.answer), where
    assert store.blobs.exists(row.envelope_sha256), where
    if post.kind == "bad-attachment":  # signed by its sender: kept as a rejected message
        message = store.message(post.message_id)
        assert message is not None and message.status is Status.REJECTED, where
        assert store.blobs.read(message.envelope_sha256) == post.envelope, where


def check_whole_store(store: MessageStore) -> Counter[str]:
    """No message row without its submission, complete history, evidences and audit entries."""
    with store.db.begin_read() as connection:
        messages = connection.execute(sa.select(messages_table)).all()
        submissions = connection.execute(sa.select(submissions_table)).all()
    by_submission = {s.id: s for s in submissions}
    with_message = {m.submission_id for m in messages}
    for s in submissions:
        assert store.blobs.exists(s.envelope_sha256), f"submission {s.id}: no envelope bytes"
        if s.http_status == 202:
            assert s.id in with_message, f"submission {s.id} answered 202 has no message"
    statuses: Counter[str] = Counter()
    for m in messages:
        where = f"message {m.message_id} ({m.status})"
        statuses[m.status] += 1
        submission = by_submission.get(m.submission_id)
        assert submission is not None and submission.message_id == m.message_id, where
        assert submission.envelope_sha256 == m.envelope_sha256, where
        envelope = store.blobs.read(m.envelope_sha256)
        assert hashlib.sha256(envelope).hexdigest() == m.envelope_sha256, where
        direction = Direction(m.direction)
        history = store.history(m.message_id)
        assert [c.status for c in history[:1]] == [Status.RECEIVED], where
        for before, after in itertools.pairwise(history):
            check_transition(direction, before.status, after.status)
        assert history[-1].status == Status(m.status), where
        assert len(history) >= 2, f"{where}: stored without its decision"
        entries = {e.index: e for e in store.audit.entries_for(m.message_id)}
        for change in history:
            entry = entries.get(change.audit_index)  # type: ignore[arg-type]
            assert entry is not None, f"{where}: no audit entry for {change.status}"
            assert entry.kind == f"message.{change.status.value}", where
        issued = {
            e.details.get("evidence_id") for e in entries.values() if e.kind == "evidence.issued"
        }
        evidences = store.evidences(m.message_id)
        for evidence in evidences:
            assert evidence.evidence_id in issued, f"{where}: evidence without audit entry"
            assert store.blobs.exists(evidence.sha256), f"{where}: evidence bytes missing"
        first = (
            EvidenceType.SUBMISSION_REJECTION
            if m.status == Status.REJECTED
            else EvidenceType.SUBMISSION_ACCEPTANCE
        )
        assert [e.type for e in evidences].count(first) == 1, where
        for attachment in store.attachments(m.message_id):
            assert store.blobs.size(attachment.sha256) == attachment.size, where
    return statuses


def check_audit(store: MessageStore, pki_dir: Path) -> int:
    """Sign a checkpoint with the gateway's key, as an operator would, and verify the log."""
    key = load_dev_pki(pki_dir).key(EVIDENCE_CERT)
    store.audit.checkpoint(key)
    report = verify_store(store.db, key.public_key(), origin=GATEWAY_ID)
    assert report.ok, report.summary()
    return store.audit.size()


def check_nothing_accepted(store: MessageStore, post: Post) -> None:
    """A 500 says "nothing was accepted, post it again": nothing is kept under its id."""
    assert post.answer is not None and b"internal-error" in post.answer, post.answer
    where = f"round {post.round}, {post.kind} {post.message_id} answered 500"
    assert store.first_answer("ES-MJ", post.message_id) is None, where
    assert store.message(post.message_id) is None, where


def check_after_kill(data_dir: Path, posts: list[Post]) -> tuple[Counter[str], int]:
    store = open_store(data_dir)
    try:
        for post in posts:
            if post.status == INTERNAL_ERROR:
                check_nothing_accepted(store, post)
            elif post.status is not None:
                check_answered(store, post)
        statuses = check_whole_store(store)
        return statuses, check_audit(store, data_dir / "pki")
    finally:
        store.db.dispose()


# ---- the test -----------------------------------------------------------------


def test_a_gateway_killed_while_accepting_loses_nothing_it_answered(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash test seed {seed} (replay: CRASH_TEST_SEED={seed})")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(
        data_dir, workers=2, env={"ROGATORY_AUDIT_CHECKPOINT_EVERY": str(rng.randint(3, 9))}
    )
    posts: list[Post] = []
    try:
        gateway.start()
        pki = load_dev_pki(data_dir / "pki")
        signer = signer_for(pki, "ES-MJ")
        tokens = read_demo_tokens(data_dir)
        token, ca = tokens["ES-MJ"], str(gateway.ca_file)
        for round_no in range(ROUNDS):
            if round_no:
                gateway.start()
            work: queue.Queue[Post] = queue.Queue()
            for post in build_posts(rng, signer, round_no, POSTS_PER_ROUND):
                work.put(post)
            delay = rng.uniform(*KILL_AFTER)
            sent: list[Post] = []
            stop = threading.Event()
            threads = [
                threading.Thread(target=client, args=(work, sent, stop, gateway.url, token, ca))
                for _ in range(CLIENTS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(delay)
            stop.set()  # no new posts; those in flight are cut off by the kill
            gateway.kill()
            for thread in threads:
                thread.join(30)
            posts += sent
            statuses, audit_size = check_after_kill(data_dir, posts)
            print(
                f"round {round_no}: killed after {delay:.2f} s; {len(sent)} posts, "
                f"{sum(p.status is not None for p in sent)} answered "
                f"({sum(p.status == 202 for p in sent)} accepted), "
                f"{sum(p.error is not None for p in sent)} cut off, "
                f"{sum(p.status == INTERNAL_ERROR for p in sent)} answered 500; "
                f"store {dict(statuses)}, {audit_size} audit entries"
            )

        # Alive again: every message posted again gets its first answer, byte for byte.
        gateway.start()
        accepted = sum(p.status == 202 for p in posts)
        errors = [p for p in posts if p.status == INTERNAL_ERROR]
        print(f"{len(errors)} answers 500 (nothing accepted, post again) to re-post")
        assert accepted >= ROUNDS, f"only {accepted} acceptances before the kills: no test"
        with requests.Session() as session:
            session.trust_env, session.verify = False, ca
            for post in posts:
                if post.status in (None, INTERNAL_ERROR):  # undecided: now it is decided
                    post.error = None
                    send(session, gateway.url, token, post)
                    assert post.error is None, post.error
                again = replace(post, status=None, answer=None, location=None)
                send(session, gateway.url, token, again)
                assert again.error is None, again.error
                where = f"{post.kind} {post.message_id} posted again"
                assert (again.status, again.answer) == (post.status, post.answer), where
                assert again.location == post.location, where
        gateway.stop()
        statuses, audit_size = check_after_kill(data_dir, posts)
        key = pki.cert_path(EVIDENCE_CERT)
        url = f"sqlite:///{data_dir / 'rogatory.db'}"
        verified = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "verify", "--db", url, "--key", str(key),
             "--origin", GATEWAY_ID],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(f"final: {len(posts)} posts, store {dict(statuses)}, {audit_size} audit entries")
    except BaseException:
        print(f"crash test seed {seed}; gateway log tail:\n{gateway.log()}")
        raise
    finally:
        gateway.stop()
