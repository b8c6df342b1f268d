"""SFTP connection set-up: reach a channel's server only when it shows the pinned host key.

The channel pins one host key as an OpenSSH public key line ("ssh-ed25519
AAAA..."). The key exchange asks for a key of that type, and the server must
present exactly that key before we even authenticate: we never read
known_hosts and never learn a key on first use. A mismatch names both
fingerprints, as OpenSSH prints them, so an operator can compare them with
the counterpart. Then we log in with the gateway's client key alone; a
server that asks for more is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from adapters.base import PermanentError, TransientError
from gateway.channels import SftpChannel

# What a server, the network or paramiko's SFTP client raise; the adapter translates them.
REMOTE_ERRORS = (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError)


def where(channel: SftpChannel) -> str:
    """How error messages name the channel's server."""
    return f"sftp {channel.user}@{channel.host}:{channel.port}"


def fingerprint(blob: bytes) -> str:
    """A public key's SHA256 fingerprint as OpenSSH prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _pinned(host_key: str) -> tuple[str, bytes] | None:
    """The key type and key blob of a "ssh-ed25519 AAAA..." pin, or None if it is no such thing."""
    fields = host_key.split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        return None
    # The blob names its own type first; a pin whose two halves disagree is a typo.
    length = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + length or blob[4 : 4 + length] != fields[0].encode():
        return None
    return fields[0], blob


def reason(error: BaseException) -> str:
    """What went wrong, in a few words, for an error message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class PinnedServer:
    """A channel's SFTP server as this gateway logs in to it, with ``client_key``."""

    channel: SftpChannel
    client_key: Path
    timeout: float

    @property
    def where(self) -> str:
        return where(self.channel)

    def connect(self) -> Any:
        """An authenticated transport to a server that showed the pinned host key."""
        pin = _pinned(self.channel.host_key)
        transport = self._handshake(pin[0] if pin else None)
        try:
            presented = transport.get_remote_server_key()
            blob = presented.asbytes()
            if pin is None or blob != pin[1]:
                raise self._wrong_host_key(presented.get_name(), blob, pin)
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        return transport

    def _handshake(self, key_type: str | None) -> Any:
        """A transport past key exchange, asking for a host key of ``key_type`` if given."""
        host, port = self.channel.host, self.channel.port
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except TimeoutError as error:
            raise TransientError(f"{self.where}: no answer within {self.timeout:g} s") from error
        except OSError as error:
            raise TransientError(f"{self.where}: cannot connect: {reason(error)}") from error
        try:
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.banner_timeout = transport.handshake_timeout = self.timeout
            transport.auth_timeout = transport.channel_timeout = self.timeout
            if key_type is not None:
                options = transport.get_security_options()
                family = [k for k in options.key_types if _key_family(k) == key_type]
                if family:
                    options.key_types = family
            done = threading.Event()
            transport.start_client(event=done)
            if not done.wait(self.timeout):
                raise TransientError(f"{self.where}: no SSH handshake within {self.timeout:g} s")
            if not transport.is_active():
                failure = transport.get_exception() or paramiko.SSHException("negotiation failed")
                if isinstance(failure, paramiko.IncompatiblePeer) and key_type is not None:
                    raise self._unpinned_type()
                raise TransientError(f"{self.where}: SSH handshake failed: {reason(failure)}")
        except BaseException:
            transport.close()
            raise
        return transport

    def _unpinned_type(self) -> PermanentError:
        """The server offers no key of the pinned type: learn which key it does offer."""
        transport = self._handshake(None)
        try:
            presented = transport.get_remote_server_key()
            pin = _pinned(self.channel.host_key)
            return self._wrong_host_key(presented.get_name(), presented.asbytes(), pin)
        finally:
            transport.close()

    def _wrong_host_key(
        self, presented_type: str, blob: bytes, pin: tuple[str, bytes] | None
    ) -> PermanentError:
        shown = f"{_key_family(presented_type)} {fingerprint(blob)}"
        if pin is None:
            return PermanentError(
                f"{self.where}: the server presented host key {shown}, but the channel pins no "
                f"valid host key ({self.channel.host_key!r}); refusing to connect"
            )
        return PermanentError(
            f"{self.where}: the server presented host key {shown}, not the pinned "
            f"{pin[0]} {fingerprint(pin[1])}; refusing to connect (if the counterpart changed its "
            "key, confirm the new fingerprint with them and update the directory)"
        )

    def _authenticate(self, transport: Any) -> None:
        try:
            key = paramiko.PKey.from_path(self.client_key)
        except (
            OSError,
            ValueError,
            TypeError,
            paramiko.SSHException,
            paramiko.UnknownKeyType,
        ) as e:
            raise PermanentError(
                f"{self.where}: the client key {self.client_key} cannot be used: {reason(e)}"
            ) from e
        user = self.channel.user
        try:
            further = transport.auth_publickey(user, key)
        except paramiko.AuthenticationException as error:
            raise PermanentError(
                f"{self.where}: the server refused client key {fingerprint(key.asbytes())} "
                f"({self.client_key}) for user {user}: {reason(error)}"
            ) from error
        if further or not transport.is_authenticated():
            raise PermanentError(
                f"{self.where}: user {user} needs more than a key to log in ({', '.join(further)})"
            )


def _key_family(algorithm: str) -> str:
    """The key type an SSH host key algorithm uses: rsa-sha2-512 keys are ssh-rsa keys."""
    return "ssh-rsa" if algorithm.startswith("rsa-sha2-") else algorithm
