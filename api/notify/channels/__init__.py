"""Channels: one notice out to one place, and what the place answered.

    Sender.send(notice) -> Outcome     ok | retry (retry_after when the tool said when)
                                       | permanent (retrying cannot help: bad secret, robot
                                       gone, password refused)

One sender per kind: `webhook` (a chat tool's JSON shape from `formats`, signed where the
tool signs; aiohttp, no redirects followed), `email` (smtplib in a thread, TLS required
unless the server is this machine), `mqtt` (the generic document on the site's broker).
A sender renders the notice itself, through the `render` it was built with, at the size
its tool allows; it never logs or returns a robot's URL, only `common.urls.url_for_log`
of it. How often a channel may send is `api.notify.limits`, the dispatcher's business.
"""

from __future__ import annotations

import aiohttp

from api.notify.channels.base import Render, Sender
from api.notify.channels.email import EmailSender
from api.notify.channels.formats import FORMATS
from api.notify.channels.mqtt import MqttSender
from api.notify.channels.webhook import WebhookSender
from api.notify.config import Channel
from collector.mqtt.config import MqttConfig


def make_sender(channel: Channel, render: Render, *, site_mqtt: MqttConfig | None,
                http: aiohttp.ClientSession) -> Sender:
    """The sender for `channel`. `http` is shared by every webhook channel (its owner
    closes it); an mqtt channel needs the site's `mqtt:` section (ValueError without)."""
    if channel.kind == "webhook":
        return WebhookSender(channel, render, http, FORMATS[channel.format])
    if channel.kind == "email":
        return EmailSender(channel, render)
    if site_mqtt is None:
        raise ValueError(f"channel {channel.name!r} is kind mqtt, but site.yaml has no mqtt: "
                         "section to say which broker")
    return MqttSender(channel, render, site_mqtt)


__all__ = ["Render", "Sender", "make_sender"]
