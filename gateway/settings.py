"""The one settings object every entry point (web app, CLI, worker) builds services from.

Precedence: ``ROGATORY_<FIELD>`` environment variables, then the optional TOML
file named by ``ROGATORY_CONFIG`` (flat keys named like the fields), then the
defaults below. Nothing is read at import time. `Settings.check()` refuses to
start on missing or unsafe settings outside development mode; in development
mode `gateway.bootstrap.ensure_development_setup` fills the missing pieces.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

from signing.errors import RogatoryError
from signing.trust import RevocationPolicy

log = logging.getLogger("rogatory.settings")

Mode = Literal["development", "production"]
MODES: tuple[Mode, ...] = ("development", "production")
ENV_PREFIX = "ROGATORY_"
CONFIG_ENV = "ROGATORY_CONFIG"
DEV_ROOT_SUBJECT_CN = "Rogatory Development Root CA"
MiB = 1024 * 1024
GiB = 1024 * MiB


class SettingsError(RogatoryError):
    """A setting is malformed, missing or unsafe; the message names it and why."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


@dataclass(frozen=True)
class Settings:
    mode: Mode = "production"
    data_dir: Path = Path("data")
    # Both derived from data_dir when left empty; repr=False: a URL may carry a password.
    database_url: str = field(default="", repr=False)
    blob_dir: Path = Path()
    gateway_id: str | None = None
    gateway_name: str | None = None
    gateway_country: str | None = None
    # The gateway's evidence-signing identity (PEM files).
    signing_key: Path | None = None
    signing_cert: Path | None = None
    signing_chain: tuple[Path, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # TLS is terminated by a reverse proxy on this machine: listen in plain HTTP on loopback.
    plain_http: bool = False
    authorities_file: Path | None = None
    # Development mode: where the development PKI lives (default <data_dir>/pki).
    pki_dir: Path | None = None
    trust_anchors: tuple[Path, ...] = ()
    revocation: RevocationPolicy = RevocationPolicy.HARD
    tsa_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    max_envelope_bytes: int = 2 * MiB
    max_attachment_bytes: int = 2 * GiB
    max_attachments: int = 100
    max_body_bytes: int = 4 * GiB
    audit_checkpoint_every: int = 1000
    # The dispatcher (rogatory worker): how much it takes at once, and how it retries.
    dispatch_batch: int = 32
    dispatch_concurrency: int = 8
    dispatch_max_attempts: int = 8
    dispatch_backoff_seconds: float = 2.0
    dispatch_backoff_cap_seconds: float = 3600.0
    dispatch_lease_seconds: float = 300.0
    poll_seconds: float = 1.0  # idle wait of the worker, and the period of pull-channel polls
    # E-mail channel: smtp[s]://[user:password@]host[:port][?starttls=1], the From address,
    # imap[s]://user:password@host[:port]/MAILBOX[?starttls=1] for what counterparts send,
    # and the S/MIME identity (default: the evidence-signing key and certificate).
    smtp_url: str = field(default="", repr=False)
    mail_from: str | None = None
    imap_url: str = field(default="", repr=False)
    smime_key: Path | None = None
    smime_cert: Path | None = None
    mail_ca_file: Path | None = None  # the CA the mail servers' TLS certificates chain to
    # SFTP channel: the gateway's SSH client key (OpenSSH or PEM format).
    sftp_key: Path | None = None
    _derived: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        derived = set()
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'rogatory.db'}")
            derived.add("database_url")
        if self.blob_dir == Path():
            object.__setattr__(self, "blob_dir", self.data_dir / "blobs")
            derived.add("blob_dir")
        object.__setattr__(self, "_derived", frozenset(derived))

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def database_url_redacted(self) -> str:
        """`database_url` with any password replaced, safe for logs and messages."""
        return redact_url(self.database_url)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`; what was derived from data_dir follows a new data_dir."""
        if "data_dir" in changes:
            blank = {"database_url": "", "blob_dir": Path()}
            for name in self._derived:
                changes.setdefault(name, blank[name])
        return replace(self, **changes)

    def check(self) -> None:
        """Raise SettingsError listing every problem; log warnings (never secrets)."""
        problems, warnings = self.review()
        for warning in warnings:
            log.warning("%s", warning)
        if problems:
            raise SettingsError(
                "refusing to start the gateway:\n" + "\n".join(f"- {p}" for p in problems),
                tuple(problems),
            )

    def review(self) -> tuple[list[str], list[str]]:
        """(problems that refuse a start, warnings) for these settings."""
        problems: list[str] = []
        warnings: list[str] = []
        problems += self._missing_files()
        problems += self._open_private_keys()
        if self.max_body_bytes < self.max_envelope_bytes:
            problems.append("max_body_bytes is smaller than max_envelope_bytes")
        if self.development:
            warnings.append("development mode: not for real requests")
            return problems, warnings
        if not self.gateway_id:
            problems.append("gateway_id is not set (ROGATORY_GATEWAY_ID)")
        if not self.gateway_country:
            problems.append("gateway_country is not set (ROGATORY_GATEWAY_COUNTRY)")
        if not self.signing_key or not self.signing_cert:
            problems.append(
                "no evidence-signing identity: set signing_key and signing_cert "
                "(ROGATORY_SIGNING_KEY, ROGATORY_SIGNING_CERT)"
            )
        if self.plain_http:
            if not _is_loopback(self.host):
                problems.append(
                    f"plain_http listens unencrypted on {self.host!r}: only a loopback "
                    "address is allowed behind a TLS-terminating proxy"
                )
        elif not self.tls_cert or not self.tls_key:
            problems.append(
                "no TLS certificate and key: set tls_cert and tls_key "
                "(ROGATORY_TLS_CERT, ROGATORY_TLS_KEY)"
            )
        if not self.authorities_file:
            problems.append("no authority directory: set authorities_file")
        if not self.trust_anchors:
            problems.append("no trust anchors: set trust_anchors")
        problems += self._development_roots()
        problems += self._unusable_files()
        if self.database_url.startswith("sqlite:"):
            warnings.append(
                "production on SQLite: fine for one node; use PostgreSQL to run several"
            )
        return problems, warnings

    # --- checks

    def _paths(self) -> list[tuple[str, Path]]:
        single = ("signing_key", "signing_cert", "tls_cert", "tls_key", "tls_client_ca")
        out = [(n, cast(Path, getattr(self, n))) for n in single if getattr(self, n)]
        if self.authorities_file:
            out.append(("authorities_file", self.authorities_file))
        out += [("signing_chain", p) for p in self.signing_chain]
        out += [("trust_anchors", p) for p in self.trust_anchors]
        return out

    def _missing_files(self) -> list[str]:
        return [
            f"{name}: {path} does not exist" for name, path in self._paths() if not path.exists()
        ]

    def _open_private_keys(self) -> list[str]:
        problems = []
        for name in ("signing_key", "tls_key", "smime_key", "sftp_key"):
            path = cast(Path | None, getattr(self, name))
            if path is None or not path.exists():
                continue
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                problems.append(
                    f"{name}: {path} is readable by group or others (mode {mode:o}); "
                    f"run chmod 600 {path}"
                )
        return problems

    def _development_roots(self) -> list[str]:
        from signing.trust import load_anchors

        problems = []
        sources = [("trust_anchors", p) for p in self.trust_anchors]
        if self.tls_client_ca:
            sources.append(("tls_client_ca", self.tls_client_ca))
        for name, path in sources:
            if not path.exists():
                continue
            try:
                anchors = load_anchors([path])
            except RogatoryError as exc:
                problems.append(f"{name}: {exc}")
                continue
            if any(_common_name(a) == DEV_ROOT_SUBJECT_CN for a in anchors):
                problems.append(
                    f"{name}: {path} holds the development root CA "
                    f"({DEV_ROOT_SUBJECT_CN!r}); its keys are not secret"
                )
        return problems

    def _unusable_files(self) -> list[str]:
        """Files that exist but cannot be used: a bad directory, a key not matching its cert."""
        problems = []
        if self.authorities_file and self.authorities_file.exists():
            from gateway.authorities import AuthorityDirectory

            try:
                AuthorityDirectory.load(self.authorities_file)
            except RogatoryError as exc:
                problems.append(f"authorities_file: {exc}")
        key, cert = self.signing_key, self.signing_cert
        if key and cert and key.exists() and cert.exists():
            from signing.keys import load_signer

            try:
                load_signer(key.read_bytes(), cert.read_bytes())
            except RogatoryError as exc:
                problems.append(f"signing_key/signing_cert: {exc}")
        return problems


def load_settings(env: Mapping[str, str] = os.environ, config_file: Path | None = None) -> Settings:
    """Defaults, overridden by the TOML file (`config_file` or ROGATORY_CONFIG), then by env."""
    values: dict[str, Any] = {}
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    if config_file is not None:
        values.update(_from_file(config_file))
    for f in fields(Settings):
        variable = ENV_PREFIX + f.name.upper()
        if variable in env:
            values[f.name] = _convert(f.name, env[variable], variable, base=None)
    return Settings(**values)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text") from None
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise SettingsError(
                f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        # Relative paths in the file are relative to the file, not to the current directory.
        out[key] = _convert(key, value, f"{path}: key {key!r}", base=path.parent)
    return out


def _convert(name: str, raw: object, where: str, base: Path | None) -> Any:
    """`raw` (a string from env, any TOML value from the file) as field `name`'s type."""
    try:
        return _CONVERTERS.get(name, _text)(raw, base)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _text(raw: object, base: Path | None) -> str | None:
    if not isinstance(raw, str):
        raise TypeError(f"expected a string, got {_show(raw)}")
    return raw or None


def _path(raw: object, base: Path | None) -> Path | None:
    text = _text(raw, base)
    if text is None:
        return None
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _required_path(raw: object, base: Path | None) -> Path:
    path = _path(raw, base)
    if path is None:
        raise ValueError("expected a path, got an empty string")
    return path


def _blob_dir(raw: object, base: Path | None) -> Path:
    return _path(raw, base) or Path()  # empty: <data_dir>/blobs


def _paths(raw: object, base: Path | None) -> tuple[Path, ...]:
    # env: os.pathsep-separated ("a.pem:b.pem"); file: an array of strings (or one string)
    if isinstance(raw, str):
        items: list[object] = [p for p in raw.split(os.pathsep) if p] if base is None else [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise TypeError(f"expected a list of paths, got {_show(raw)}")
    out = [_path(item, base) for item in items]
    return tuple(p for p in out if p is not None)


def _integer(raw: object, base: Path | None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError(f"expected an integer, got {_show(raw)}")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if raw <= 0:
        raise ValueError(f"expected a positive integer, got {raw}")
    return raw


def _port(raw: object, base: Path | None) -> int:
    port = _integer(raw, base)
    if port > 65535:
        raise ValueError(f"expected a port number 1..65535, got {port}")
    return port


def _seconds(raw: object, base: Path | None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError(f"expected a number of seconds, got {_show(raw)}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a positive number of seconds, got {raw!r}")
    return value


def _boolean(raw: object, base: Path | None) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOLEANS:
        return _BOOLEANS[raw.strip().lower()]
    raise ValueError(f"expected true or false, got {_show(raw)}")


def _mode(raw: object, base: Path | None) -> Mode:
    if raw not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {_show(raw)}")
    return raw


def _revocation(raw: object, base: Path | None) -> RevocationPolicy:
    choices = [p.value for p in RevocationPolicy]
    if raw not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {_show(raw)}")
    return RevocationPolicy(raw)


def _database_url(raw: object, base: Path | None) -> str:
    text = _text(raw, base)
    if text is None:
        return ""
    if "://" not in text:
        raise ValueError(f"expected a URL such as sqlite:///path or postgresql://..., got {text!r}")
    return text


def _mail_url(raw: object, base: Path | None) -> str:
    text = _text(raw, base)
    if text is None:
        return ""
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in ("smtp", "smtps", "imap", "imaps"):
        raise ValueError(f"expected an smtp://, smtps://, imap:// or imaps:// URL, got {scheme!r}")
    return text


def _country(raw: object, base: Path | None) -> str | None:
    text = _text(raw, base)
    if text is not None and not (len(text) == 2 and text.isascii() and text.isupper()):
        raise ValueError(f"expected a two-letter ISO 3166 country code, got {text!r}")
    return text


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

_CONVERTERS: dict[str, Callable[[object, Path | None], Any]] = {
    "mode": _mode,
    "data_dir": _required_path,
    "database_url": _database_url,
    "blob_dir": _blob_dir,
    "gateway_country": _country,
    "signing_key": _path,
    "signing_cert": _path,
    "signing_chain": _paths,
    "tls_cert": _path,
    "tls_key": _path,
    "tls_client_ca": _path,
    "plain_http": _boolean,
    "authorities_file": _path,
    "pki_dir": _path,
    "trust_anchors": _paths,
    "revocation": _revocation,
    "port": _port,
    "max_envelope_bytes": _integer,
    "max_attachment_bytes": _integer,
    "max_attachments": _integer,
    "max_body_bytes": _integer,
    "audit_checkpoint_every": _integer,
    "dispatch_batch": _integer,
    "dispatch_concurrency": _integer,
    "dispatch_max_attempts": _integer,
    "dispatch_backoff_seconds": _seconds,
    "dispatch_backoff_cap_seconds": _seconds,
    "dispatch_lease_seconds": _seconds,
    "poll_seconds": _seconds,
    "smtp_url": _mail_url,
    "imap_url": _mail_url,
    "smime_key": _path,
    "smime_cert": _path,
    "mail_ca_file": _path,
    "sftp_key": _path,
}


def _show(value: object) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, str) else repr(value)


def _common_name(cert: Any) -> str | None:
    from cryptography.x509.oid import NameOID

    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
