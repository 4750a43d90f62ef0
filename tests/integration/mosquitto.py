"""A private Mosquitto for tests that restart the broker, need passwords or TLS.

Each `Mosquitto` is its own process on a free loopback port, with its config, persistence
database, password file and log under one directory (a test's `tmp_path`). `stop()` sends
SIGTERM, on which Mosquitto saves its persistence database, so persistent sessions and the
QoS 1 messages queued for them survive `restart()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.conftest import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and the files a broker and a client need, made with `trustme`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path, name: str = "ca") -> TlsFiles:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert(HOST, "localhost")
        client = ca.issue_cert("patrol-agent@example.test")
        files = cls(
            ca=directory / f"{name}.pem",
            server_cert=directory / f"{name}-server.pem",
            server_key=directory / f"{name}-server.key",
            client_cert=directory / f"{name}-client.pem",
            client_key=directory / f"{name}-client.key",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files


class Mosquitto:
    """One `mosquitto` process: start(), stop() (SIGTERM, state saved), restart(), close().

    `users` (name -> password) turns anonymous access off; `tls` adds a TLS listener on
    `tls_port`, requiring client certificates when `require_certificate`. The plain
    listener on `port` is always there (the tests publish through it). `max_queued_messages`
    is Mosquitto's per-client queue (its own default is 1000; lifted here unless a test
    wants a slow consumer's messages dropped).
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        max_queued_messages: int = 100_000,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.users = users or {}
        self.log_path = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        lines = [
            f"persistence true\npersistence_location {directory / 'data'}/",
            "autosave_interval 0",  # saved on SIGTERM; no periodic saves to race with
            f"log_dest file {self.log_path}",
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information",
            f"max_queued_messages {max_queued_messages}",
            f"listener {self.port} {HOST}",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to `mosquitto`, who cannot read tmp
        self.password_file = directory / "passwords"
        if self.users:
            self.password_file.touch(mode=0o600)
            for name, password in self.users.items():
                self._passwd(name, password)
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}",
                f"require_certificate {'true' if require_certificate else 'false'}",
            ]
        self.config_path = directory / "mosquitto.conf"
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{HOST}:{self.tls_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def start(self, timeout: float = 10) -> Mosquitto:
        """Start the broker and return once every listener accepts connections."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + timeout
        while not all(_accepts(port) for port in ports):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"mosquitto did not listen within {timeout}s:\n{self.log}")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Stop the broker; on SIGTERM it saves sessions and queued messages first."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password and have the running broker reload its password file."""
        self._passwd(name, password)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def _passwd(self, name: str, password: str) -> None:
        subprocess.run(["mosquitto_passwd", "-b", str(self.password_file), name, password],
                       check=True, capture_output=True, timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Teardown: kill whatever is still running."""
        self.stop(signal.SIGKILL)


class Publisher:
    """A plain paho client on a broker's plain listener; publishes wait for the broker's ack."""

    def __init__(self, port: int, *, username: str | None = None,
                 password: str | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"pub-{uuid.uuid4().hex[:12]}")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect(HOST, port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"publisher could not connect to {HOST}:{port}")
            time.sleep(0.01)

    def publish(self, messages: Iterable[tuple[str, str | bytes]], qos: int = 1) -> None:
        """Publish every (topic, payload), then wait until the broker has each one."""
        infos = [self.client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise RuntimeError(f"message {info.mid} not acknowledged by the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
