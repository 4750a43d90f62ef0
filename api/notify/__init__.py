"""Notifications (SPEC 7.2): NC changes heard by engineering and quality staff, once, on
the tool they use, and again only when it matters.

    NC change (api.lifecycle) --decide, same transaction--> notifications (pending) + timers
    dispatcher: timers due -> more notifications; groups due -> silences, inhibition,
                mutes, limits -> one message per group (or a digest) -> channel -> settled

Pieces: `config` (site.yaml `notify:`), `events` (which NC change raises which event),
`routing` (the routing tree and its lint), `intervals` (named time intervals), `render`
(messages in en / zh-CN within each tool's size), `channels/` (webhook formats, email,
mqtt), `outbox` (decisions written with the change), `dispatch` (groups, limits, sending),
`silences`, `links` (signed acknowledgement links).
"""
