# ruff: noqa: RUF001  (full-width Chinese punctuation is meant)
"""Every word a notification says, per locale (`site.locale`, a channel's `locale`).

The zh-CN words are the glossary's (/work/shared/GLOSSARY.md: 不合格项, 整改, 待验证,
已超期, 责任人...), one term per concept. Both locales have the same keys
(tests/test_notify_render.py), and zh-CN holds no English word: placeholders in braces are
filled with data or numbers.
"""

from __future__ import annotations

from typing import Any

from api.notify.config import Locale

EN: dict[str, Any] = {
    "prefix": "[Patrol] ",
    "at_site": " at {site}",
    "ncs_one": "{n} NC",
    "ncs_many": "{n} NCs",
    "title_one": "{prefix}{id} {event}: {title}",
    "title_group": "{prefix}{ncs} {event}{at_site}",
    "title_mixed": "{prefix}{ncs} changed{at_site}",
    "title_digest": "{prefix}{ncs} in the last {minutes} min{at_site}",
    "title_test": "{prefix}Test message{at_site}",
    "test_body": "A test message from Patrol for channel {channel}: notifications reach "
                 "this channel.",
    "digest": "{ncs} in the last {minutes} minutes, the most severe first:",
    "more_one": "… {n} more NC not shown",
    "more_many": "… {n} more NCs not shown",
    "view_all": "View all",
    "open": "Open NC",
    "acknowledge": "Acknowledge",
    "colon": ": ",
    "asset": "Asset",
    "standard": "Standard",
    "clause": "{standard}, clause {clause}",
    "manual": "manual finding",
    "value": "Value",
    "limit_range": "{value} (limit {min} to {max})",
    "limit_max": "{value} (limit ≤ {max})",
    "limit_min": "{value} (limit ≥ {min})",
    "detected": "Detected",
    "due": "Due",
    "overdue_mark": " (overdue)",
    "assignee": "Assignee",
    "assignee_department": "{assignee} ({department})",
    "severity_tag": "[{label}]",
    "severity": {"critical": "critical", "major": "major", "minor": "minor"},
    "department": {"engineering": "engineering", "quality": "quality"},
    "event": {
        "raised": "Raised",
        "occurrence": "Occurred again (occurrence {occurrences})",
        "assigned": "Assigned to {assignee}",
        "rectified": "Rectified, awaiting verification",
        "reopened": "Reopened",
        "recurring": "Recurring: closed within the last 90 days, found again",
        "overdue": "Overdue",
        "due_soon": "Due soon",
        "escalated": "Escalated: not acknowledged in time",
        "closed": "Closed",
        "cancelled": "Cancelled",
        "chattering": "Chattering: the violation starts and stops again and again",
        "reminder": "Reminder: still not acknowledged",
        "ack_timeout": "Acknowledged but not rectified in time",
    },
    "event_short": {
        "raised": "raised",
        "occurrence": "occurred again",
        "assigned": "assigned",
        "rectified": "awaiting verification",
        "reopened": "reopened",
        "recurring": "recurring",
        "overdue": "overdue",
        "due_soon": "due soon",
        "escalated": "escalated",
        "closed": "closed",
        "cancelled": "cancelled",
        "chattering": "chattering",
        "reminder": "not acknowledged",
        "ack_timeout": "not rectified",
    },
}

ZH: dict[str, Any] = {
    "prefix": "【巡查】",
    "at_site": "{site}：",
    "ncs_one": "{n} 项不合格项",
    "ncs_many": "{n} 项不合格项",
    "title_one": "{prefix}{id} {event}：{title}",
    "title_group": "{prefix}{at_site}{event} {ncs}",
    "title_mixed": "{prefix}{at_site}{ncs}有变化",
    "title_digest": "{prefix}{at_site}近 {minutes} 分钟 {ncs}",
    "title_test": "{prefix}{at_site}测试消息",
    "test_body": "通知渠道 {channel} 的测试消息：能看到此消息，说明通知可以送达。",
    "digest": "近 {minutes} 分钟共 {ncs}，按严重程度列出：",
    "more_one": "… 另有 {n} 项不合格项未显示",
    "more_many": "… 另有 {n} 项不合格项未显示",
    "view_all": "查看全部",
    "open": "查看不合格项",
    "acknowledge": "确认",
    "colon": "：",
    "asset": "设备",
    "standard": "检查标准",
    "clause": "{standard} 条款 {clause}",
    "manual": "人工检查发现",
    "value": "实测值",
    "limit_range": "{value}（限值 {min} 至 {max}）",
    "limit_max": "{value}（限值 ≤ {max}）",
    "limit_min": "{value}（限值 ≥ {min}）",
    "detected": "发现时间",
    "due": "整改时限",
    "overdue_mark": "（已超期）",
    "assignee": "责任人",
    "assignee_department": "{assignee}（{department}）",
    "severity_tag": "【{label}】",
    "severity": {"critical": "紧急", "major": "重要", "minor": "次要"},
    "department": {"engineering": "工程部", "quality": "品质部"},
    "event": {
        "raised": "新发现",
        "occurrence": "再次出现（第 {occurrences} 次）",
        "assigned": "已指派给 {assignee}",
        "rectified": "已提交整改，待验证",
        "reopened": "重新打开",
        "recurring": "重复发生：90 天内曾关闭，再次发现",
        "overdue": "已超期",
        "due_soon": "临近截止时间",
        "escalated": "已升级：未及时确认",
        "closed": "已关闭",
        "cancelled": "已撤销",
        "chattering": "告警频繁抖动：不合格反复出现又消失",
        "reminder": "提醒：仍未确认",
        "ack_timeout": "已确认但未按时整改",
    },
    "event_short": {
        "raised": "新发现",
        "occurrence": "再次出现",
        "assigned": "已指派",
        "rectified": "待验证",
        "reopened": "重新打开",
        "recurring": "重复发生",
        "overdue": "已超期",
        "due_soon": "临近截止时间",
        "escalated": "已升级",
        "closed": "已关闭",
        "cancelled": "已撤销",
        "chattering": "告警抖动",
        "reminder": "仍未确认",
        "ack_timeout": "未按时整改",
    },
}

CATALOGS: dict[Locale, dict[str, Any]] = {"en": EN, "zh-CN": ZH}


def catalog(locale: str) -> dict[str, Any]:
    """The words of a locale; English for one Patrol does not speak."""
    return CATALOGS.get(locale, EN)  # type: ignore[call-overload]
