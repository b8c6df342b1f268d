"""A real OpenSSH sshd on 127.0.0.1 for the SFTP channel tests.

``Sshd(directory).start()`` writes a host key, a client key, authorized_keys
and a config into ``directory``, runs ``/usr/sbin/sshd -D -e -f <config>``
on a free port (its log goes to ``directory/sshd.log``) and returns once the
port answers with an SSH banner. ``drop_connections()`` SIGKILLs the
per-connection processes, as a network failure would end them;
``stop()`` ends those and the listener. Runs as whoever runs the tests (root
in CI): the SFTP user is the current user, its files are the test's own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.gateway_process import free_port, process_stats

SSHD = Path("/usr/sbin/sshd")


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new key pair without passphrase at ``path`` and ``path.pub``; returns ``path``."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    size = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def public_key_line(key: Path) -> str:
    """The "ssh-ed25519 AAAA..." line of a key pair, without its comment."""
    kind, blob = key.with_name(key.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def openssh_fingerprint(key: Path) -> str:
    """The SHA256 fingerprint that ``ssh-keygen -l`` prints for a key pair."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.with_name(key.name + ".pub"))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def _openssh_version() -> tuple[int, int]:
    run = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", run.stdout + run.stderr)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, fields in process_stats():
        tree.setdefault(int(fields[1]), []).append(pid)
    return tree


class Sshd:
    """One sshd on ``directory``; start, stop and restart it with other keys as needed."""

    def __init__(self, directory: Path, *, sftp_flags: str = "") -> None:
        self.directory = directory
        self.sftp_flags = sftp_flags  # e.g. "-R": internal-sftp refuses every write
        directory.mkdir(parents=True, exist_ok=True)
        self.host_keys = [keygen(directory / "host_ed25519")]
        self.client_key = keygen(directory / "client_ed25519")
        self.authorized_keys = directory / "authorized_keys"
        self.authorized_keys.write_text(public_key_line(self.client_key) + "\n")
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = free_port()
        self.log = directory / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """The pin of the first host key, as an SftpChannel takes it."""
        return public_key_line(self.host_keys[0])

    def authorize(self, client_key: Path) -> None:
        with self.authorized_keys.open("a") as f:
            f.write(public_key_line(client_key) + "\n")

    def _config(self) -> Path:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            *(f"HostKey {key}" for key in self.host_keys),
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            f"AllowUsers {self.user}",
            f"Subsystem sftp internal-sftp {self.sftp_flags}".rstrip(),
            "LogLevel VERBOSE",
        ]
        if _openssh_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # tests fail logins on purpose
        config = self.directory / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        config = self._config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}:\n{self.log.read_text()}")

    def drop_connections(self) -> None:
        """SIGKILL every process the listener forked: each open connection ends at once."""
        if self.process is None:
            return
        tree, pending, found = _children(), [self.process.pid], []
        while pending:
            for child in tree.get(pending.pop(), []):
                found.append(child)
                pending.append(child)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is None:
            return
        self.drop_connections()
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> Sshd:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
