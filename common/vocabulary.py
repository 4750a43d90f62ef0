"""The words of the contract (SPEC sections 4 to 6), each spelled once: compliance states,
NC states, roles, actions, feed types, severities, categories.

Every layer imports them from here (rules judge compliance, the API keeps NCs, the CLI
makes tokens), and the API's OpenAPI enums are built from these Literals, so a word added
here reaches the engine, the database checks and the published schema together
(tests/test_vocabulary.py compares them). Names only: what the words mean lives with the
code that acts on them (the NC state machine in api/workflow.py).
"""

from __future__ import annotations

from typing import Literal, get_args

ComplianceState = Literal["ok", "violating", "no_data", "inactive"]
"""Where an (asset, standard) stands: what the engine reports and compliance rates count."""
COMPLIANCE_STATES: tuple[ComplianceState, ...] = get_args(ComplianceState)
GatewayStatus = Literal["online", "offline"]
"""A gateway as its heartbeats show it: offline once silent past
`server.gateway_offline_after` (api.gateways)."""
WindowState = Literal["pending", "active", "ended"]
"""An out-of-service window: starting later, in force now, or over (ran out, or ended
early)."""

NcState = Literal["open", "acknowledged", "rectifying", "pending_verification", "closed",
                  "cancelled"]
"""The states of a nonconformance (SPEC section 5)."""
NC_STATES: tuple[NcState, ...] = get_args(NcState)
ENDED_STATES: tuple[NcState, ...] = ("closed", "cancelled")
"""An NC in one of these is over: a new violation opens a new NC."""
OPEN_STATES: tuple[NcState, ...] = tuple(s for s in NC_STATES if s not in ENDED_STATES)
UNRECTIFIED: tuple[NcState, ...] = tuple(s for s in OPEN_STATES
                                         if s != "pending_verification")
"""States in which the due date (detected + rectify_within) can pass: once rectified on
time, an NC waiting for its verification is not overdue."""

Role = Literal["agent", "engineer", "quality", "tracker", "admin"]
"""Roles of API tokens (SPEC section 6)."""
ROLES: tuple[Role, ...] = get_args(Role)
SYSTEM_ROLE = "system"
"""The role history records for changes Patrol makes itself (sensor verification,
overdue): never a token's role."""
ActorRole = Literal[Role, "system"]
"""Who may appear in an NC's history: a token's role, or the system."""

ActionName = Literal["acknowledge", "start", "rectify", "verify", "cancel", "reopen",
                     "assign"]
"""What people do to an NC (POST /nonconformances/{id}/{action})."""
ACTION_NAMES: tuple[ActionName, ...] = get_args(ActionName)

FeedType = Literal["raised", "occurrence", "cleared", "acknowledged", "started", "assigned",
                   "rectified", "verified", "reopened", "closed", "cancelled", "overdue"]
"""Types of the feed's events (GET /feed, webhooks' `event_types`)."""
FEED_TYPES: tuple[FeedType, ...] = get_args(FeedType)

Severity = Literal["minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
Category = Literal["equipment", "environment", "energy", "safety"]
CATEGORIES: tuple[Category, ...] = get_args(Category)
ROOT_CAUSE_CATEGORIES: tuple[str, ...] = (
    "equipment_wear", "design", "installation", "operation_error", "maintenance_missed",
    "supplier", "environment", "sensor_fault", "unknown")
"""`site.root_cause_categories` by default (SPEC 7.3): the controlled list beside the free
text of a rectification's `root_cause`; `unknown` is what a rectify without one records."""

OnRecovery = Literal["keep_open", "close"]
"""What an NC does when its condition clears before anyone rectified it."""
