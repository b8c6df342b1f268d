"""A real gateway in a subprocess for tests: `python -m gateway serve --dev` on a free port.

`GatewayProcess(data_dir).start()` runs gunicorn (TLS, the development PKI)
in its own process group and returns once ``/healthz`` answers; ``kill()``
sends SIGKILL to the whole group (master and workers, no clean-up of any
kind) and waits until none of them is left; ``stop()`` is the graceful
SIGTERM. Linux only (it reads /proc to see the group gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """Each running process's pid and its /proc stat fields after the name: state ppid pgrp ..."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces or parentheses.
        yield int(entry.name), stat[stat.rfind(")") + 2 :].split()


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    return any(
        len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X")
        for _, fields in process_stats()
    )


class GatewayProcess:
    """One gateway on ``data_dir``; start, kill and restart it as often as needed."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ca_file: Path | None = None,
    ):
        self.data_dir = data_dir
        self.workers = workers
        self.extra_env = env or {}
        self.fixed_port = port
        self._ca_file = ca_file
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-gateway.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self._ca_file or self.data_dir / "pki" / "root-ca.pem"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
        # gunicorn's control socket defaults to one path per user; keep ours apart.
        runtime = self.data_dir.parent / f"{self.data_dir.name}-run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env | self.extra_env

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        if self.process is not None:
            raise RuntimeError("the gateway is running already")
        self.port = self.fixed_port or free_port()
        command = [
            sys.executable, "-m", "gateway", "serve", "--dev", "--data", str(self.data_dir),
            "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the gateway exited with {self.process.returncode}:\n{self.log()}"
                )
            if self.ca_file.exists():
                context = ssl.create_default_context(cafile=str(self.ca_file))
                try:
                    with urllib.request.urlopen(
                        f"{self.url}/healthz", context=context, timeout=2
                    ) as answer:
                        if answer.status == 200:
                            return
                except (OSError, ssl.SSLError):
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"the gateway did not answer /healthz in {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process group, as a power cut would, and reap it."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the master leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: gunicorn's graceful shutdown; SIGKILL if it does not finish in time."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
