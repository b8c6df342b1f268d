"""One bootstrap: build the gateway's services from one Settings object.

The web app, the CLI and (later) the worker call ``build_services`` and get
the same store, audit log, trust engine, authority directory and intake.
Nothing here runs at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signing.keys import Signer, load_signer
from signing.timestamp import HttpTimeStamper, TimeStamper
from signing.trust import TrustEngine

from .audit import AuditLog
from .authorities import Authority, AuthorityDirectory
from .blobs import BlobStore, large_blob_store_for
from .db import Database
from .intake import IntakeService
from .settings import Settings, SettingsError
from .small_blobs import TieredBlobStore
from .store import MessageStore
from .verification import build_engine

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .peer_notice import NoticeTaken
    from .poller import Poller


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    audit: AuditLog
    store: MessageStore
    engine: TrustEngine | None
    directory: AuthorityDirectory
    signer: Signer
    timestamper: TimeStamper | None
    intake: IntakeService
    # The newest checkpoint's size, as last read or signed here; None until read once.
    _checkpointed: int | None = field(default=None, init=False)

    def maybe_checkpoint(self) -> None:
        """Sign a checkpoint once ``audit_checkpoint_every`` entries have passed since the last.

        Called after every request, so as a rule it costs no query: this
        process's appends tell how far the log has grown (each reads its head,
        so they count other workers' entries too), and the newest checkpoint's
        size is remembered (it only grows). Both are read only when a
        checkpoint may be due, and once at first, for a worker yet to append.
        """
        every = self.settings.audit_checkpoint_every
        if every <= 0:
            return
        if self._checkpointed is not None and self.audit.size_seen - self._checkpointed < every:
            return
        size = self.audit.size()
        last = self.audit.latest_checkpoint()  # another worker may have signed one
        self._checkpointed = last.size if last is not None else 0
        if size - self._checkpointed >= every:
            self._checkpointed = self.audit.checkpoint(self.signer.key).size

    def written_record(self, message_id: str) -> bytes:
        """The signed PDF record of a stored message (see gateway.record)."""
        from .record import written_record

        return written_record(
            message_id,
            store=self.store,
            blobs=self.blobs,
            audit=self.audit,
            signer=self.signer,
            gateway_name=self.intake.issuer.name,
            timestamper=self.timestamper,
        )

    def collect(self, message_id: str, authority: Authority) -> bytes:
        """The recipient takes the message; the signed Retrieval evidence."""
        from .retrieval import collect

        return collect(
            self.store, self.blobs, self.signer, self.intake.issuer, message_id, authority,
            timestamper=self.timestamper,
        )  # fmt: skip

    def dispatcher(self, **options: Any) -> Dispatcher:
        """The outbox's dispatcher with the real adapters; ``options`` override the settings."""
        from datetime import timedelta

        from .dispatcher import Dispatcher
        from .outbox import Backoff
        from .transports import GatewayTransports

        settings = self.settings
        config: dict[str, Any] = {
            "backoff": Backoff(
                base_seconds=settings.dispatch_backoff_seconds,
                cap_seconds=settings.dispatch_backoff_cap_seconds,
                max_attempts=settings.dispatch_max_attempts,
            ),
            "batch": settings.dispatch_batch,
            "concurrency": settings.dispatch_concurrency,
            "lease": timedelta(seconds=settings.dispatch_lease_seconds),
            "timestamper": self.timestamper,
        }
        config.update(options)
        transports = config.pop("transports", None) or GatewayTransports(settings, self.directory)
        return Dispatcher(
            self.store, self.blobs, self.directory, self.engine, self.signer,
            self.intake.issuer, transports, **config,
        )  # fmt: skip

    def poller(self) -> Poller | None:
        """The polls of the pull channels configured here, or None if there are none."""
        from .transports import pull_sources

        sources = pull_sources(self.settings, self.directory)
        if not sources:
            return None
        from .peer_notice import accept_channel_notice
        from .poller import Poller

        def accept_notice(
            kind: str, authority_id: str, data: bytes, deferred_before: bool
        ) -> NoticeTaken:
            return accept_channel_notice(
                self.store, self.engine, self.directory, kind, authority_id, data,
                deferred_before=deferred_before,
            )  # fmt: skip

        return Poller(self.intake, self.audit, self.blobs, sources, accept_notice=accept_notice)

    def close(self) -> None:
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Open the database (migrating it), load keys and the directory, wire the intake."""
    if settings.signing_key is None or settings.signing_cert is None:
        raise SettingsError("the gateway needs a signing identity (signing_key, signing_cert)")
    if settings.authorities_file is None:
        raise SettingsError("the gateway needs an authorities_file")
    db = Database.from_url(settings.database_url)
    blobs = TieredBlobStore(db, large_blob_store_for(db, settings.blob_dir))
    audit = AuditLog(db, origin=settings.gateway_id or "rogatory")
    store = MessageStore(db, blobs, audit, gateway_id=settings.gateway_id or "rogatory")
    engine = build_engine(settings.trust_anchors, revocation=settings.revocation)
    directory = AuthorityDirectory.load(settings.authorities_file)
    signer = load_signer(
        settings.signing_key.read_bytes(),
        settings.signing_cert.read_bytes(),
        [p.read_bytes() for p in settings.signing_chain],
    )
    timestamper = HttpTimeStamper(settings.tsa_url) if settings.tsa_url else None
    intake = IntakeService(
        store, blobs, engine, directory, signer, settings, timestamper=timestamper
    )
    return Services(
        settings, db, blobs, audit, store, engine, directory, signer, timestamper, intake
    )
