"""URLs as logs show them: the origin and the path's shape, never a key."""

from __future__ import annotations

import pytest

from common.urls import location_host, url_for_log


@pytest.mark.parametrize(("url", "shown"), [
    ("https://oapi.dingtalk.com/robot/send?access_token=5f1b2c",
     "https://oapi.dingtalk.com:443/robot/send"),
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa",
     "https://qyapi.weixin.qq.com:443/cgi-bin/webhook/send"),
    ("https://open.feishu.cn/open-apis/bot/v2/hook/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
     "https://open.feishu.cn:443/open-apis/bot/v2/hook/***"),
    ("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefGHIJKLmnopQRSTuvwx",
     "https://hooks.slack.com:443/services/***/***/***"),
    ("http://writer:s3cret@[::1]:8086/api/v2/write?org=-&bucket=patrol",
     "http://[::1]:8086/api/v2/write"),
    ("http://127.0.0.1:9/hook#frag", "http://127.0.0.1:9/hook"),
    ("HTTP://Example.COM", "http://example.com:80"),
    ("not a url", "<unparsable URL>"),
    ("http://host:99999/", "<unparsable URL>"),
])
def test_url_for_log_keeps_the_origin_and_path_shape_only(url: str, shown: str) -> None:
    assert url_for_log(url) == shown


@pytest.mark.parametrize(("location", "shown"), [
    ("http://evil.example:8080/steal?token=1", "http://evil.example:8080"),
    ("//cdn.example/x", "http://cdn.example:80"),
    ("/login?next=/api", "a path on the same origin"),
    (None, "no Location"),
])
def test_a_redirect_is_reported_by_its_origin(location: str | None, shown: str) -> None:
    assert location_host(location) == shown
