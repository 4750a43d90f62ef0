"""`patrol notify test`: one signed message through a real channel, and a clear failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.chat_receivers import ChatServer, chat_fixture  # noqa: F401

PATROL = [sys.executable, "-m", "agent.cli"]


def site(tmp_path: Path, url: str, secret: str, locale: str = "en") -> Path:
    (tmp_path / "dingtalk-url").write_text(url + "\n")
    (tmp_path / "dingtalk-secret").write_text(secret + "\n")
    path = tmp_path / "site.yaml"
    path.write_text(f"""site: {{id: tower-a, name: Tower A, locale: {locale}}}
notify:
  channels:
    - {{name: eng-dingtalk, kind: webhook, format: dingtalk, url_file: dingtalk-url,
       secret_file: dingtalk-secret}}
  routes:
    - {{match: {{}}, channels: [eng-dingtalk]}}
""")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PATROL, *args], capture_output=True, text=True, timeout=60)


def test_a_test_message_reaches_the_robot_signed(tmp_path: Path, chat: ChatServer) -> None:
    robot = chat.add("dingtalk", secret="SEC-right")
    done = run("notify", "test", "-c", str(site(tmp_path, robot.url, "SEC-right", "zh-CN")),
               "--channel", "eng-dingtalk")
    assert done.returncode == 0, done.stderr
    assert "sent a test message through eng-dingtalk" in done.stdout
    [message] = robot.accepted  # the receiver checked the signature and its time window
    assert message["msgtype"] == "markdown"
    assert "Tower A" in message["markdown"]["title"] + message["markdown"]["text"]


def test_a_wrong_secret_is_a_clear_failure_without_the_key(tmp_path: Path,
                                                           chat: ChatServer) -> None:
    robot = chat.add("dingtalk", secret="SEC-right")
    done = run("notify", "test", "-c", str(site(tmp_path, robot.url, "SEC-wrong")),
               "--channel", "eng-dingtalk")
    assert done.returncode == 1
    assert "eng-dingtalk: not delivered" in done.stderr
    assert "retrying would not help" in done.stderr
    assert robot.key not in done.stderr + done.stdout
    assert robot.accepted == []


def test_an_unknown_channel_is_exit_2(tmp_path: Path, chat: ChatServer) -> None:
    robot = chat.add("dingtalk", secret="s")
    done = run("notify", "test", "-c", str(site(tmp_path, robot.url, "s")), "--channel", "x")
    assert done.returncode == 2
    assert "no channel named 'x' (channels: eng-dingtalk)" in done.stderr
