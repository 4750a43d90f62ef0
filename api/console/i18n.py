# ruff: noqa: RUF001  (full-width Chinese punctuation is meant)
"""Every word the console says, in English and Simplified Chinese (the glossary's terms,
/work/shared/GLOSSARY.md, one per concept). Both locales have the same keys, and zh-CN
holds no English word (tests/test_console_pages.py reads the pages' visible text). No
key is the name of a dict method (`clear`, `items`...): templates read `t.clear` as the
method."""

from __future__ import annotations

from typing import Any

EN: dict[str, Any] = {
    "product": "Patrol",
    "sign_in": "Sign in", "sign_out": "Sign out", "name": "Name", "password": "Password",
    "signed_in_as": "{name} ({role})",
    "ncs": "Nonconformances", "filter": "Filter", "reset": "Clear", "next": "Next page",
    "any": "any", "yes": "yes", "no": "no", "none": "No nonconformance matches.",
    "id": "ID", "title": "Title", "asset": "Asset", "standard": "Standard",
    "severity": "Severity", "state": "State", "detected": "Detected", "due": "Due",
    "department": "Department", "overdue": "Overdue", "recurring": "Recurring",
    "site": "Site", "language": "Language",
    "states": {"open": "open", "acknowledged": "acknowledged", "rectifying": "rectifying",
               "pending_verification": "pending verification", "closed": "closed",
               "cancelled": "cancelled"},
    "severities": {"critical": "critical", "major": "major", "minor": "minor"},
    "roles": {"engineer": "engineer", "quality": "quality", "tracker": "tracker",
              "admin": "administrator"},
    "languages": {"en": "English", "zh-CN": "简体中文"},
    "refused": "Sign-in refused",
    "reasons": {"wrong": "Wrong name or password.",
                "locked": "Too many failed sign-ins: try again in 15 minutes.",
                "disabled": "This user is disabled: ask an administrator.",
                "expired": "The form has expired: please sign in again."},
    "forbidden": "This form has expired or was not sent by this page: reload and try again.",
    "summary": "Summary", "timeline": "History", "actions": "Actions",
    "evidence": "Evidence", "value": "Value", "limit": "Limit", "clause": "Clause",
    "assignee": "Assignee", "occurrences": "Occurrences", "closed_at": "Closed",
    "not_allowed": "Your role may not do this.",
    "do": {"acknowledge": "Acknowledge", "start": "Start rectifying",
           "rectify": "Rectify", "verify": "Verify", "cancel": "Cancel (false alarm)",
           "reopen": "Reopen", "assign": "Assign"},
    "fields": {"action": "What was done", "root_cause": "Root cause",
               "root_cause_category": "Root cause category", "result": "Result",
               "reason": "Reason", "assignee": "Assignee", "note": "Note"},
    "results": {"pass": "pass", "fail": "fail"},
    "history_actions": {"raised": "raised", "acknowledge": "acknowledged",
                        "start": "started rectifying", "rectify": "rectified",
                        "verify": "verified", "verified": "verified by sensor",
                        "cancel": "cancelled", "reopen": "reopened",
                        "reopened": "reopened by sensor", "assign": "assigned",
                        "occurrence": "occurred again", "cleared": "cleared",
                        "overdue": "overdue", "escalated": "escalated",
                        "external_ref": "tracker reference"},
    "refused_action": "Not done",
    "readings_note": "{n} readings around detection; dashed: the standard's limits.",
    "limit_min": "lower limit", "limit_max": "upper limit", "time": "Time",
    "board": "Compliance board", "since": "since {time}", "as_of": "as of {time}",
    "board_empty": "No compliance reported yet: agents send it every few minutes.",
    "compliance": {"ok": "compliant", "violating": "violating", "no_data": "no data",
                   "inactive": "inactive"},
    "report": "KPI report", "from": "From", "to": "To", "group_by": "By", "show": "Show",
    "total": "Total", "previous": "previous period", "download": "Download",
    "groupings": {"site": "site", "asset": "asset", "asset_type": "asset type",
                  "standard": "standard", "category": "category",
                  "department": "department", "root_cause": "root cause",
                  "month": "month"},
    "kpis": {"compliance_rate": "Compliance rate", "coverage": "Coverage",
             "raised": "Raised", "closed": "Closed", "open_at_end": "Open at the end",
             "overdue": "Overdue", "on_time_rate": "On-time rate",
             "first_pass_rate": "First-pass rate", "reopen_rate": "Reopen rate",
             "mttr_s": "Mean time to rectify", "intactness_rate": "Intactness rate"},
    "hours": "{n} h",
    "users": "Users", "new_password": "New password", "set_password": "Set password",
    "disable": "Disable", "enable": "Enable", "disabled": "disabled",
    "admin_only": "Only an administrator manages users.",
    "password_set": "Password set for {name}; their sessions are ended.",
}

ZH: dict[str, Any] = {
    "product": "巡检",
    "sign_in": "登录", "sign_out": "退出", "name": "用户名", "password": "密码",
    "signed_in_as": "{name}（{role}）",
    "ncs": "不合格项", "filter": "筛选", "reset": "清除", "next": "下一页",
    "any": "全部", "yes": "是", "no": "否", "none": "没有符合条件的不合格项。",
    "id": "编号", "title": "标题", "asset": "设备", "standard": "检查标准",
    "severity": "严重程度", "state": "状态", "detected": "发现时间", "due": "整改时限",
    "department": "责任部门", "overdue": "已超期", "recurring": "重复发生",
    "site": "项目", "language": "语言",
    "states": {"open": "待处理", "acknowledged": "已确认", "rectifying": "整改中",
               "pending_verification": "待验证", "closed": "已关闭",
               "cancelled": "已撤销"},
    "severities": {"critical": "紧急", "major": "重要", "minor": "次要"},
    "roles": {"engineer": "工程人员", "quality": "品质人员", "tracker": "整改跟踪系统",
              "admin": "管理员"},
    "languages": {"en": "English", "zh-CN": "简体中文"},
    "refused": "登录失败",
    "reasons": {"wrong": "用户名或密码错误。",
                "locked": "登录失败次数过多，请 15 分钟后再试。",
                "disabled": "该用户已停用，请联系管理员。",
                "expired": "页面已过期，请重新登录。"},
    "forbidden": "表单已过期或并非由本页面提交，请刷新后重试。",
    "summary": "概要", "timeline": "处理记录", "actions": "操作",
    "evidence": "证据", "value": "实测值", "limit": "限值", "clause": "条款",
    "assignee": "责任人", "occurrences": "发生次数", "closed_at": "关闭时间",
    "not_allowed": "您的角色无权执行此操作。",
    "do": {"acknowledge": "确认", "start": "开始整改", "rectify": "提交整改",
           "verify": "验证", "cancel": "撤销（误报）", "reopen": "重新打开",
           "assign": "指派"},
    "fields": {"action": "整改措施", "root_cause": "根本原因",
               "root_cause_category": "根本原因类别", "result": "验证结果",
               "reason": "原因", "assignee": "责任人", "note": "备注"},
    "results": {"pass": "通过", "fail": "不通过"},
    "history_actions": {"raised": "新发现", "acknowledge": "已确认",
                        "start": "开始整改", "rectify": "提交整改",
                        "verify": "验证", "verified": "传感器自动验证",
                        "cancel": "已撤销", "reopen": "重新打开",
                        "reopened": "传感器验证未通过，重新打开", "assign": "指派",
                        "occurrence": "再次出现", "cleared": "已恢复",
                        "overdue": "已超期", "escalated": "已升级",
                        "external_ref": "整改跟踪单号"},
    "refused_action": "未执行",
    "readings_note": "发现前后的 {n} 个读数；虚线为检查标准的限值。",
    "limit_min": "下限", "limit_max": "上限", "time": "时间",
    "board": "达标看板", "since": "自 {time}", "as_of": "截至 {time}",
    "board_empty": "尚无达标数据：网关每隔几分钟上报一次。",
    "compliance": {"ok": "达标", "violating": "不达标", "no_data": "无数据",
                   "inactive": "未启用"},
    "report": "指标报表", "from": "开始日期", "to": "结束日期", "group_by": "分组",
    "show": "查看", "total": "合计", "previous": "上期", "download": "下载",
    "groupings": {"site": "项目", "asset": "设备", "asset_type": "设备类型",
                  "standard": "检查标准", "category": "类别", "department": "责任部门",
                  "root_cause": "根本原因", "month": "月份"},
    "kpis": {"compliance_rate": "达标率", "coverage": "数据覆盖率",
             "raised": "新发现", "closed": "已关闭", "open_at_end": "期末未关闭",
             "overdue": "已超期", "on_time_rate": "整改及时率",
             "first_pass_rate": "一次验证通过率", "reopen_rate": "重新打开率",
             "mttr_s": "平均整改时长", "intactness_rate": "设备完好率"},
    "hours": "{n} 小时",
    "users": "用户", "new_password": "新密码", "set_password": "重置密码",
    "disable": "停用", "enable": "启用", "disabled": "已停用",
    "admin_only": "仅管理员可管理用户。",
    "password_set": "已为 {name} 重置密码，其登录会话已失效。",
}

CATALOGS: dict[str, dict[str, Any]] = {"en": EN, "zh-CN": ZH}
LANGUAGES = tuple(CATALOGS)


def texts(language: str | None) -> dict[str, Any]:
    return CATALOGS.get(language or "en", EN)


def from_header(accept_language: str | None) -> str:
    """The first of the browser's languages the console has (for the sign-in page)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"
