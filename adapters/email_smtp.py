"""SMTP submission: hand one finished mail to the configured server (adapters.email).

Each mail opens its own connection (implicit TLS, STARTTLS or plain), logs in
when a user is configured, and quits. The server's answer decides the error:
a 5xx reply, a missing extension or a certificate we do not trust is a
``PermanentError``; anything else (a 4xx reply, an unreachable server) a
``TransientError``, so the mail is tried again.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base import PermanentError, TransientError


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how outgoing mail is handed over."""

    host: str
    from_address: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False  # implicit TLS (port 465)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ca_file: Path | None = None  # trust these CAs for the server's certificate, not the system's
    max_message_bytes: int = 20 * 1024 * 1024  # envelope and attachments, before base64


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file``, or the system's CAs without one."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def deliver(config: SmtpConfig, recipient: str, mail: bytes) -> None:
    """Send ``mail`` (headers and body) from ``config.from_address`` to ``recipient``."""
    where = f"SMTP server {config.host}:{config.port}"
    try:
        if config.ssl:
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                config.host,
                config.port,
                timeout=config.timeout,
                context=tls_context(config.ca_file),
            )
        else:
            server = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        try:
            if config.starttls and not config.ssl:
                server.starttls(context=tls_context(config.ca_file))
            if config.user:
                server.login(config.user, config.password or "")
            server.sendmail(config.from_address, [recipient], mail)
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        raise _reply_error(where, code, reply) from None
    except smtplib.SMTPResponseException as exc:
        raise _reply_error(where, exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"{where} presented a certificate we do not trust: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientError(f"{where} could not be reached: {exc}") from None


def _reply_error(where: str, code: int, reply: bytes | str) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    message = f"{where} answered {code} {text}"
    return PermanentError(message) if 500 <= code < 600 else TransientError(message)
