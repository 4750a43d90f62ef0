"""The routing tree (SPEC 7.2): matching, first match and `continue`, events in preference
order, group keys, and every lint warning `patrol check` prints, with none on the shipped
examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.site import load_site
from api.notify.config import NotifyConfig
from api.notify.routing import fields_of, group_key, lint, matches, routes_for

EXAMPLES = Path(__file__).parent.parent / "examples"

SPEC_EXAMPLE = """\
notify:
  channels:
    - {name: eng-dingtalk, kind: webhook, format: dingtalk, url_env: DINGTALK_URL,
       secret_env: DINGTALK_SECRET, mention: {mobiles: ["138..."], all: false}}
    - {name: eng-wecom, kind: webhook, format: wecom, url_file: secrets/wecom-url}
    - {name: ops-feishu, kind: webhook, format: feishu, url_env: FEISHU_URL,
       secret_env: FEISHU_SECRET}
    - {name: slack, kind: webhook, format: slack, url_env: SLACK_URL}
    - {name: quality-mail, kind: email, smtp: smtps://mail.example:465, username: patrol,
       password_env: SMTP_PASSWORD, from: patrol@example.com, to: [quality@example.com]}
    - {name: siren, kind: mqtt, topic: plant/alerts}
  time_intervals:
    - name: night
      times: ["22:00-07:00"]
      weekdays: [mon-sun]
  inhibit:
    - source: {standard_kind: stale}
      target: {}
      equal: [asset_id]
  routes:
    - match: {severity: [critical]}
      channels: [eng-dingtalk, siren]
      group_wait: 0s
      repeat_interval: 30m
      escalate_after: 15m
      escalate_to: [quality-mail]
      ack_timeout: 2h
      continue: true
    - match: {department: [engineering]}
      events: [raised, reopened, recurring, overdue, due_soon]
      channels: [eng-wecom]
      group_by: [site_id, department, standard_id]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      mute_time_intervals: [night]
      mute_bypass: [critical]
    - match: {}
      channels: [quality-mail]
  limits: {max_per_10m: 10}
"""
"""The `notify:` example of SPEC 7.2, as written there (comments left out)."""


def spec_example() -> dict[str, Any]:
    return yaml.safe_load(SPEC_EXAMPLE)["notify"]


def config(**notify: Any) -> NotifyConfig:
    """A NotifyConfig with channels a, b, c and the given keys."""
    channels = [{"name": name, "kind": "mqtt", "topic": f"t/{name}"} for name in "abc"]
    return NotifyConfig.model_validate({"channels": channels, **notify})


def nc(**fields: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {"site_id": "tower-a", "asset_id": "CH-1",
                                   "asset_type": "chiller", "standard_id": "HVAC-1",
                                   "standard_kind": "range", "severity": "major",
                                   "department": "engineering", "category": "equipment"}
    return {**base, **fields}


def hits(cfg: NotifyConfig, fields: dict[str, str | None],
         *events: str) -> list[tuple[int, str]]:
    return [(hit.index, hit.event) for hit in routes_for(cfg, fields, events or ("raised",))]


def warnings(cfg: NotifyConfig) -> list[str]:
    return [str(w) for w in lint(cfg)]


# --- matching ----------------------------------------------------------------------------


def test_every_key_must_hold_and_each_takes_any_of_its_values() -> None:
    match = {"severity": ("critical", "major"), "department": ("engineering",)}
    assert matches(match, nc(severity="major"))
    assert not matches(match, nc(severity="minor"))
    assert not matches(match, nc(department="quality"))
    assert matches({}, nc())


def test_a_missing_or_none_field_matches_nothing() -> None:
    assert not matches({"department": ("engineering",)}, nc(department=None))
    assert not matches({"department": ("engineering",)}, {"severity": "major"})
    assert not matches({"department": ("None",)}, nc(department=None))


def test_values_compare_as_text() -> None:
    assert matches({"asset_id": ("7",)}, {"asset_id": 7})


def test_fields_of_an_nc_are_the_match_keys_only() -> None:
    public = {"id": "NC-000123", "site_id": "tower-a", "asset_id": "CH-1",
              "standard_id": "HVAC-CHW-SUPPLY", "severity": "major", "department": None,
              "category": "equipment", "state": "open", "asset_type": "chiller"}
    assert fields_of(public) == {
        "site_id": "tower-a", "asset_id": "CH-1", "asset_type": "chiller",
        "standard_id": "HVAC-CHW-SUPPLY", "standard_kind": None, "severity": "major",
        "department": None, "category": "equipment"}


# --- the tree ----------------------------------------------------------------------------


def test_the_spec_example_routes_as_its_comments_say() -> None:
    cfg = NotifyConfig.model_validate(spec_example())
    assert hits(cfg, nc(severity="critical")) == [(0, "raised"), (1, "raised")]
    assert hits(cfg, nc(severity="critical", department="quality")) == [(0, "raised"),
                                                                          (2, "raised")]
    assert hits(cfg, nc()) == [(1, "raised")]
    # route 1 does not take `closed`: the catch-all does
    assert hits(cfg, nc(), "closed") == [(2, "closed")]
    assert hits(cfg, nc(department=None)) == [(2, "raised")]


def test_first_match_wins_unless_the_route_continues() -> None:
    routes = [{"match": {"severity": "major"}, "channels": ["a"]},
              {"match": {"department": "engineering"}, "channels": ["b"]},
              {"channels": ["c"]}]
    assert hits(config(routes=routes), nc()) == [(0, "raised")]
    routes[0]["continue"] = True
    assert hits(config(routes=routes), nc()) == [(0, "raised"), (1, "raised")]
    routes[1]["continue"] = True
    assert hits(config(routes=routes), nc()) == [(0, "raised"), (1, "raised"), (2, "raised")]
    assert [h.channels for h in routes_for(config(routes=routes), nc(), ("raised",))] == [
        ("a",), ("b",), ("c",)]


def test_no_route_matching_means_no_hit() -> None:
    assert hits(config(routes=[{"match": {"severity": "critical"}, "channels": ["a"]}]),
                nc()) == []


def test_each_route_takes_the_first_event_it_accepts_once() -> None:
    routes = [{"events": ["raised"], "channels": ["a"], "continue": True},
              {"events": ["recurring", "raised"], "channels": ["b"], "continue": True},
              {"channels": ["c"], "continue": True},
              {"events": ["closed"], "channels": ["a"]}]
    assert hits(config(routes=routes), nc(), "recurring", "raised") == [
        (0, "raised"), (1, "recurring"), (2, "recurring")]


def test_a_route_refusing_the_event_lets_a_later_one_take_it() -> None:
    routes = [{"events": ["closed"], "channels": ["a"]}, {"channels": ["b"]}]
    assert hits(config(routes=routes), nc(), "raised") == [(1, "raised")]
    assert hits(config(routes=routes), nc(), "closed") == [(0, "closed")]


def test_an_unknown_event_is_the_callers_bug() -> None:
    with pytest.raises(ValueError, match="raise"):
        routes_for(config(routes=[{"channels": ["a"]}]), nc(), ("raise",))
    with pytest.raises(ValueError):
        routes_for(config(routes=[{"channels": ["a"]}]), nc(), ())


def test_group_keys_are_sorted_text_of_the_group_by_values() -> None:
    cfg = config(routes=[{"channels": ["a"]},
                         {"channels": ["a"], "group_by": ["standard_id", "asset_id"]},
                         {"channels": ["a"], "group_by": []}])
    default, by_two, none = cfg.routes
    assert group_key(default, nc()) == "department=engineering|site_id=tower-a"
    assert group_key(default, nc(department=None)) == "department=|site_id=tower-a"
    assert group_key(by_two, nc()) == "asset_id=CH-1|standard_id=HVAC-1"
    assert group_key(by_two, nc(asset_id="a|b=c\\")) == "asset_id=a\\|b=c\\\\|standard_id=HVAC-1"
    assert group_key(none, nc()) == ""


# --- lint --------------------------------------------------------------------------------


def test_the_shipped_examples_and_a_complete_spec_example_lint_clean() -> None:
    examples = [path for path in sorted(EXAMPLES.glob("*.yaml"))
                if "\nnotify:" in path.read_text()]
    assert examples, "examples/site.yaml has a notify: section"
    for path in examples:
        notify = load_site(path, secrets=False).config.notify
        assert notify is not None and warnings(notify) == [], path
    example = spec_example()
    example["channels"] = [c for c in example["channels"]
                           if c["name"] not in ("ops-feishu", "slack")]
    assert warnings(NotifyConfig.model_validate(example)) == []


def test_the_spec_example_as_written_has_two_channels_no_route_uses() -> None:
    """It shows every format; two of its channels are there only to be shown."""
    assert warnings(NotifyConfig.model_validate(spec_example())) == [
        "notify.channels[2]: channel 'ops-feishu' is used by no route (channels or "
        "escalate_to)",
        "notify.channels[3]: channel 'slack' is used by no route (channels or escalate_to)",
    ]


def test_a_route_after_a_catch_all_is_never_reached() -> None:
    cfg = config(routes=[{"channels": ["a"]}, {"match": {"severity": "critical"},
                                               "channels": ["b", "c"]}])
    assert warnings(cfg) == [
        "notify.routes[1]: never reached: notify.routes[0] before it matches every NC and "
        "event and does not continue"]


def test_listing_every_severity_is_a_catch_all_too() -> None:
    cfg = config(routes=[{"match": {"severity": ["minor", "major", "critical"]},
                          "channels": ["a", "b", "c"]},
                         {"match": {"department": "quality"}, "channels": ["a"]}])
    assert warnings(cfg) == [
        "notify.routes[1]: never reached: notify.routes[0] before it matches every NC and "
        "event and does not continue"]


def test_a_route_inside_an_earlier_ones_match_and_events_is_shadowed() -> None:
    cfg = config(routes=[
        {"match": {"severity": ["critical", "major"]}, "events": ["raised", "reopened"],
         "channels": ["a"]},
        {"match": {"severity": "critical", "department": "engineering"},
         "events": ["raised"], "channels": ["b"]},
        {"channels": ["c"]}])
    assert warnings(cfg) == [
        "notify.routes[1]: never reached: notify.routes[0] before it matches every NC and "
        "event this route does, and does not continue"]


@pytest.mark.parametrize("earlier", [
    {"match": {"severity": "critical"}, "channels": ["a"], "continue": True},
    {"match": {"severity": "critical"}, "events": ["raised"], "channels": ["a"]},
    {"match": {"severity": "critical", "category": "safety"}, "channels": ["a"]},
    {"match": {"severity": "major"}, "channels": ["a"]},
], ids=["continues", "fewer-events", "narrower-match", "other-values"])
def test_no_shadow_when_the_later_route_can_still_be_reached(earlier: dict[str, Any]) -> None:
    cfg = config(routes=[earlier, {"match": {"severity": "critical"}, "channels": ["b"]},
                         {"channels": ["c"]}])
    assert warnings(cfg) == []


def test_group_wait_longer_than_group_interval() -> None:
    cfg = config(routes=[{"channels": ["a", "b", "c"], "group_wait": "10m",
                          "group_interval": "5m"}])
    assert warnings(cfg) == [
        "notify.routes[0]: group_wait (10m) is longer than group_interval (5m): a group's "
        "first message waits longer than its later ones"]


def test_repeat_interval_shorter_than_group_interval() -> None:
    cfg = config(routes=[{"channels": ["a", "b", "c"], "remind_every": "1m"}])
    assert warnings(cfg) == [
        "notify.routes[0]: repeat_interval (1m) is shorter than group_interval (5m): "
        "reminders go out with the group's messages, at most once per group_interval"]


def test_an_inhibit_rule_without_equal_holds_back_every_site() -> None:
    cfg = config(routes=[{"channels": ["a", "b", "c"]}],
                 inhibit=[{"source": {"standard_kind": "stale"}, "equal": ["asset_id"]},
                          {"source": {"severity": "critical"}}])
    assert warnings(cfg) == [
        "notify.inhibit[1]: no `equal`: while any NC matching source is open, every NC "
        "matching target is held back, on every asset and site (add e.g. equal: "
        "[asset_id])"]


def test_escalation_channels_count_as_used() -> None:
    cfg = config(routes=[{"channels": ["a"], "escalate_after": "15m", "escalate_to": ["b"]}])
    assert warnings(cfg) == [
        "notify.channels[2]: channel 'c' is used by no route (channels or escalate_to)"]


def test_no_routes_at_all() -> None:
    assert warnings(config()) == ["notify.routes: no routes: no NC notifies anyone"]


def test_a_mute_interval_that_always_holds() -> None:
    cfg = config(time_intervals=[{"name": "always"}],
                 routes=[{"channels": ["a", "b", "c"], "mute_time_intervals": ["always"]}])
    assert warnings(cfg) == [
        "notify.routes[0]: time interval 'always' has neither times nor weekdays, so it "
        "holds always: this route is muted for good (but for mute_bypass)"]


def test_without_a_catch_all_it_says_which_ncs_reach_nobody() -> None:
    cfg = config(routes=[{"match": {"severity": "critical"}, "channels": ["a", "b", "c"]}])
    assert warnings(cfg) == [
        "notify.routes: no catch-all route: NCs reach no channel for severity minor, major; "
        "any category; any event (end the routes with `- match: {}` to hear of every NC)"]


def test_a_gap_in_events_and_fields_no_route_covers_are_named() -> None:
    cfg = config(routes=[
        {"match": {"department": "engineering"}, "channels": ["a"]},
        {"match": {"category": ["equipment", "energy"]}, "channels": ["b"]},
        {"events": ["raised", "closed"], "channels": ["c"]}])
    assert warnings(cfg) == [
        "notify.routes: no catch-all route: NCs reach no channel for any severity; category "
        "environment, safety; event occurrence, assigned, rectified, reopened, recurring, "
        "overdue, due_soon, escalated, cancelled, chattering, unless their department "
        "matches a route (end the routes with `- match: {}` to hear of every NC)"]


def test_a_gap_that_is_no_product_says_some_of() -> None:
    cfg = config(routes=[
        {"match": {"severity": "critical"}, "events": ["raised"], "channels": ["a"]},
        {"match": {"severity": "major"}, "channels": ["b"]},
        {"match": {"severity": "minor", "category": ["equipment", "energy", "environment"]},
         "channels": ["c"]}])
    assert warnings(cfg) == [
        "notify.routes: no catch-all route: NCs reach no channel for some of: severity "
        "minor, critical; any category; any event (end the routes with `- match: {}` to "
        "hear of every NC)"]


def test_routes_covering_everything_together_need_no_catch_all() -> None:
    cfg = config(routes=[{"match": {"asset_id": "CH-1"}, "channels": ["c"]},
                         {"match": {"severity": "critical"}, "channels": ["a"]},
                         {"match": {"severity": ["minor", "major"]}, "channels": ["b"]}])
    assert warnings(cfg) == []
