"""A real SMTP server for the tests: aiosmtpd with TLS (a `trustme` CA) and AUTH.

    MailReceiver(tmp, implicit=False)  smtp://   STARTTLS required before anything else,
                                                 AUTH (PLAIN or LOGIN) required to send
    MailReceiver(tmp, implicit=True)   smtps://  TLS from the first byte, AUTH required

`ca_file` is the CA a client must trust; `messages` what was accepted, each parsed back
with the standard library (`email.policy.default` decodes RFC 2047 and base64) and with
how it arrived (TLS, the authenticated login, the mechanism).
"""

from __future__ import annotations

import email
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Mail:
    """One accepted message and how it came."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None
    mechanism: str | None


class MailReceiver:
    """An aiosmtpd Controller (its own thread and loop) on a free loopback port."""

    def __init__(self, directory: Path, *, implicit: bool = False,
                 users: dict[str, str] | None = None,
                 exclude: Iterable[str] = ()) -> None:
        self.users = users if users is not None else {"patrol": "s3cret-密码"}
        self.messages: list[Mail] = []
        self.attempts: list[tuple[str, str, bool]] = []  # (mechanism, login, accepted)
        self._lock = threading.Lock()
        ca = trustme.CA()
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / ("smtps-ca.pem" if implicit else "smtp-ca.pem")
        ca.cert_pem.write_to_path(str(self.ca_file))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(server_context)
        self.port = free_port()
        self.url = f"{'smtps' if implicit else 'smtp'}://{HOST}:{self.port}"
        common: dict[str, Any] = {"hostname": HOST, "port": self.port,
                                  "authenticator": self._authenticate, "auth_required": True,
                                  "auth_exclude_mechanism": list(exclude)}
        if implicit:
            # aiosmtpd cannot tell implicit TLS from none: AUTH must not wait for STARTTLS
            self.controller = Controller(self, ssl_context=server_context,
                                         auth_require_tls=False, **common)
        else:
            self.controller = Controller(self, tls_context=server_context,
                                         require_starttls=True, **common)

    def start(self) -> MailReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        accepted = self.users.get(login) == password
        with self._lock:
            self.attempts.append((mechanism, login, accepted))
        return AuthResult(success=accepted, handled=False,
                          auth_data=(login, mechanism) if accepted else None)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        transport = server.transport
        login, mechanism = session.auth_data if session.authenticated else (None, None)
        with self._lock:
            self.messages.append(Mail(
                str(envelope.mail_from), list(envelope.rcpt_tos), message,
                transport is not None and transport.get_extra_info("ssl_object") is not None,
                login, mechanism))
        return "250 OK"
