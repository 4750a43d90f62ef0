"""An email channel: text and HTML alternatives over SMTP, encrypted unless on this machine.

    smtp://host[:25]    STARTTLS required (`starttls: false` allows clear text; by
                        default a loopback host, a local MTA, is not asked for it)
    smtps://host[:465]  TLS from the first byte

The server's certificate is verified (system CAs, or `ca_file`); AUTH when `username` is
given, its password from `password_env` / `password_file`. smtplib runs in a thread: it
blocks, and one message a minute does not need an async SMTP client. A refused password or
recipient is permanent; 4xx answers and connection failures are retried.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import smtplib
import socket
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from api.notify.channels.base import Render
from api.notify.config import Channel
from api.notify.message import Notice, Outcome, Rendered
from common.secrets import SecretError

TEXT_LIMIT = 256 * 1024
HTML_LIMIT = 512 * 1024
TIMEOUT = 30.0

POLICY = SMTP.clone(cte_type="7bit")
"""CRLF lines, and every part 7-bit (base64 or quoted-printable, RFC 2047 headers): a
Chinese subject reaches servers that do not speak 8BITMIME or SMTPUTF8."""


class EmailSender:
    """One email channel; each send is one SMTP session."""

    def __init__(self, channel: Channel, render: Render, *, timeout: float = TIMEOUT) -> None:
        self.channel = channel
        self.render = render
        self.timeout = timeout

    async def send(self, notice: Notice) -> Outcome:
        try:
            password = self.channel.password()
        except SecretError as exc:
            return Outcome(False, f"channel {self.channel.name}: {exc}")
        message = compose(self.channel, self.render(notice, "text", TEXT_LIMIT),
                          self.render(notice, "html", HTML_LIMIT))
        return await asyncio.to_thread(deliver, self.channel, message, password,
                                       self.timeout)

    async def close(self) -> None:
        """No connection is kept between messages."""


def compose(channel: Channel, text: Rendered, html: Rendered,
            now: datetime | None = None) -> EmailMessage:
    """multipart/alternative: the text rendering (its title is the subject) and the HTML."""
    assert channel.from_ is not None
    message = EmailMessage(policy=POLICY)
    message["Subject"] = text.title
    message["From"] = channel.from_
    message["To"] = ", ".join(channel.to)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=channel.from_.rpartition("@")[2] or None)
    message.set_content(text.body)
    message.add_alternative(html.body, subtype="html")
    return message


def endpoint(url: str) -> tuple[str, int, bool]:
    """(host, port, implicit TLS) of `smtp://host:port` or `smtps://host:port`."""
    parts = urlsplit(url)
    implicit = parts.scheme == "smtps"
    return parts.hostname or "localhost", parts.port or (465 if implicit else 25), implicit


def starttls_required(channel: Channel, host: str) -> bool:
    if channel.starttls is not None:
        return channel.starttls
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def deliver(channel: Channel, message: EmailMessage, password: str | None,
            timeout: float) -> Outcome:
    """One SMTP session (blocking): connect, TLS, AUTH, send; the answer as an Outcome."""
    assert channel.smtp is not None
    host, port, implicit = endpoint(channel.smtp)
    where = f"{host}:{port}"
    context = ssl.create_default_context(
        cafile=str(channel.ca_file) if channel.ca_file else None)
    local = socket.gethostname()  # not getfqdn(): a slow resolver would stall each send
    try:
        smtp = (smtplib.SMTP_SSL(host, port, local, timeout=timeout, context=context)
                if implicit else smtplib.SMTP(host, port, local, timeout=timeout))
        with smtp:
            if not implicit and starttls_required(channel, host):
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    return Outcome(False, f"{where} does not offer STARTTLS (starttls: false "
                                          "sends in clear text)", permanent=True)
                smtp.starttls(context=context)
            if channel.username:
                login(smtp, channel.username, password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome(False, f"{where} refused user {channel.username!r}: "
                              f"{_said(exc)}", permanent=True)
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome(False, f"{where} refused every recipient: "
                              f"{', '.join(exc.recipients)}", permanent=True)
    except smtplib.SMTPNotSupportedError as exc:
        return Outcome(False, f"{where}: {exc}", permanent=True)
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, f"{where} answered {_said(exc)}",
                       permanent=500 <= exc.smtp_code < 600)
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, f"{where}: {type(exc).__name__}: {exc}")
    if refused:
        return Outcome(True, f"{where} refused {', '.join(refused)}")
    return Outcome(True)


def login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH as smtplib does it, except that a non-ASCII name or password (which smtplib
    cannot encode) goes as UTF-8 in AUTH PLAIN, as RFC 4616 defines it."""
    if (username + password).isascii():
        smtp.login(username, password)
        return
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        raise smtplib.SMTPNotSupportedError("the server offers no AUTH PLAIN, which a "
                                            "non-ASCII password needs")
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    code, answer = smtp.docmd("AUTH", f"PLAIN {token}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, answer)


def _said(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
        else str(exc.smtp_error)
    return f"{exc.smtp_code} {text}"[:300]
