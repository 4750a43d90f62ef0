# ruff: noqa: RUF001, RUF002  (the full-width look-alikes are the point)
"""The markup of each chat tool a message is rendered for: how data is escaped, and how
bold text, a heading, a link, a severity and a line break are written.

Data (an NC's title, an asset id, an assignee) is escaped before any template sees it, so
neither a built-in template nor a user's can forge a link or markup from it. The chat
tools' markdown renderers (DingTalk, WeCom, Feishu) document no backslash escapes, so the
characters that build markup are replaced by their full-width look-alikes (`[` by `［`):
always readable, never syntax. Slack documents only `&`, `<`, `>` as entities and has no
escape for `*`, `_`, `~`, `` ` ``: those get look-alikes too. HTML is escaped by Jinja's
autoescape, and its helpers return `markupsafe.Markup`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup, escape

_LOOKALIKE = str.maketrans({"[": "［", "]": "］", "<": "＜", ">": "＞", "*": "＊",
                            "_": "＿", "`": "｀", "~": "～", "\\": "＼"})
_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "*": "＊", "_": "＿",
                        "`": "｀", "~": "～"})
_URL_UNSAFE = re.compile(r"[\s()<>\"'|\\^`{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]+")
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """Data on one line: control and direction characters, newlines and lone surrogates
    (which UTF-8 cannot carry) become one space; a title with a newline could otherwise
    start a heading or fake a line of its own."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def safe_url(url: str | None) -> str | None:
    """An http(s) URL whose characters cannot end a markdown link or a Slack link early;
    None for anything else (javascript:, a relative path)."""
    if not url or not url.startswith(("http://", "https://")):
        return None
    return _URL_UNSAFE.sub(lambda m: quote(m[0]), url)


@dataclass(frozen=True, slots=True)
class Style:
    """One tool's markup. Helpers take text already escaped (HTML: any text)."""

    name: str
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    heading: Callable[[str], str]
    link: Callable[[str, str], str]
    colour: Callable[[str, str], str]
    """(severity, text): the text in the severity's colour where the tool has colours."""
    newline: str
    """Between the lines of one block (DingTalk needs two spaces before it)."""
    gap: str
    """Between blocks: the header, each entry, the trailer."""
    html: bool = False


def _plain(text: str) -> str:
    return text


def _md_link(url: str, text: str) -> str:
    return f"[{text}]({url})"


def _text_link(url: str, text: str) -> str:
    return f"{text}: {url}"


def _slack_link(url: str, text: str) -> str:
    return f"<{url.replace('&', '&amp;')}|{text}>"


def _html_link(url: str, text: str) -> str:
    return Markup('<a href="{}">{}</a>').format(url, text)


def _font(colours: dict[str, str], quote_char: str = "") -> Callable[[str, str], str]:
    def colour(severity: str, text: str) -> str:
        found = colours.get(severity)
        return f"<font color={quote_char}{found}{quote_char}>{text}</font>" if found else text
    return colour


_DINGTALK_COLOURS = {"critical": "#D93026", "major": "#E8710A", "minor": "#5F6368"}

STYLES: dict[str, Style] = {
    "dingtalk": Style("dingtalk", lambda s: s.translate(_LOOKALIKE), lambda s: f"**{s}**",
                      lambda s: f"### {s}", _md_link, _font(_DINGTALK_COLOURS),
                      newline="  \n", gap="\n\n"),
    "wecom_markdown": Style("wecom_markdown", lambda s: s.translate(_LOOKALIKE),
                            lambda s: f"**{s}**", lambda s: f"### {s}", _md_link,
                            _font({"critical": "warning", "major": "warning",
                                   "minor": "comment"}, '"'),
                            newline="\n", gap="\n\n"),
    "feishu": Style("feishu", lambda s: s.translate(_LOOKALIKE), lambda s: f"**{s}**",
                    lambda s: f"**{s}**", _md_link,
                    _font({"critical": "red", "major": "orange", "minor": "grey"}, "'"),
                    newline="\n", gap="\n\n"),
    "slack": Style("slack", lambda s: s.translate(_SLACK), lambda s: f"*{s}*",
                   lambda s: f"*{s}*", _slack_link, lambda _sev, s: s,
                   newline="\n", gap="\n\n"),
    "html": Style("html", _plain, lambda s: Markup("<b>{}</b>").format(s),
                  lambda s: Markup("<h3>{}</h3>").format(s), _html_link,
                  lambda sev, s: Markup('<span style="color:{}">{}</span>').format(
                      _DINGTALK_COLOURS.get(sev, "inherit"), s),
                  newline="<br>\n", gap="\n<hr>\n", html=True),
    **{name: Style(name, _plain, _plain, _plain, _text_link, lambda _sev, s: s,
                   newline="\n", gap="\n\n")
       for name in ("wecom_text", "text", "generic")},
}
"""By `render`'s style name."""


def html_escape(text: str) -> str:
    """HTML-escape text outside a template (the heading of an email body)."""
    return str(escape(text))
