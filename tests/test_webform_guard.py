"""The web form's cheap defences and its config, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from emaild.config import load_config
from emaild.errors import ConfigError
from emaild.webform.guard import RateLimiter, ReplayGuard, client_address, origin_verdict


def test_rate_limiter_bursts_then_refills_per_key() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0], max_keys=3)
    assert [limiter.allow("f", "1.2.3.4", 3, 6.0) for _ in range(3)] == [0.0] * 3
    assert limiter.allow("f", "1.2.3.4", 3, 6.0) == pytest.approx(10.0)
    assert limiter.allow("f", "5.6.7.8", 3, 6.0) == 0.0  # another client
    assert limiter.allow("g", "1.2.3.4", 3, 6.0) == 0.0  # another form
    now[0] += 10.0  # 6 a minute: one token back
    assert limiter.allow("f", "1.2.3.4", 3, 6.0) == 0.0
    assert limiter.allow("f", "1.2.3.4", 3, 6.0) > 0
    for i in range(10):  # bounded: the oldest keys go
        limiter.allow("f", f"10.0.0.{i}", 3, 6.0)
    assert len(limiter._buckets) == 3


def test_replay_guard_lets_the_same_submission_through_and_forgets_expired() -> None:
    guard = ReplayGuard(max_keys=100)
    assert guard.claim("sig1", "<a>", expires=200, now=100)
    assert guard.claim("sig1", "<a>", expires=200, now=150)  # the same submission again
    assert not guard.claim("sig1", "<b>", expires=200, now=150)  # another one
    assert guard.claim("sig2", "<c>", expires=300, now=250)  # sig1 expired: dropped
    assert "sig1" not in guard._used


def test_client_address_proxies_and_ipv6() -> None:
    assert client_address("203.0.113.9", "1.1.1.1", []) == "203.0.113.9"  # untrusted proxy
    trusted = ["127.0.0.1", "10.0.0.0/8"]
    assert client_address("127.0.0.1", "198.51.100.7, 10.1.2.3", trusted) == "198.51.100.7"
    assert client_address("2001:db8:1:2:3:4:5:6", None, []) == "2001:db8:1:2::/64"
    assert client_address("::ffff:192.0.2.1", None, []) == "192.0.2.1"


def test_origin_verdict() -> None:
    own = "http://127.0.0.1:8080"
    assert origin_verdict(own, None, own, [], False) == (True, own)
    assert origin_verdict("https://evil.test", None, own, [], False) == (False, "https://evil.test")
    assert origin_verdict(None, "https://a.test/x?y", own, ["https://a.test"], False)[0]
    assert origin_verdict(None, None, own, [], False) == (True, "absent")
    assert origin_verdict(None, None, own, [], True) == (False, "absent")
    assert origin_verdict("null", None, own, [], False) == (False, "null")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('name = "a b"\naddress = "s@example.com"', "letters, digits"),
        ('name = "x"\naddress = "nope"', "not an email address"),
        ('name = "x"\naddress = "s@example.com"\nallowed_origins = ["evil"]', "not an origin"),
        ('name = "x"\naddress = "s@example.com"\ntemplate = "missing"', "no auto-response"),
        (
            'name = "x"\naddress = "s@example.com"\n[[webform.fields]]\nname = "email"',
            "built-in field",
        ),
        (
            'name = "x"\naddress = "s@example.com"\n[[webform]]\nname = "x"\n'
            'address = "s@example.com"',
            "used twice",
        ),
    ],
)
def test_bad_form_config_names_file_and_key(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "emaild.toml"
    path.write_text(f"[[webform]]\n{toml}\n", encoding="utf-8")
    env = {"HOME": str(tmp_path), "EMAILD_STATE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        config = load_config(path, env)
        from emaild.services import Loaded

        Loaded.load(config)
    assert problem in str(caught.value)
    assert "webform" in str(caught.value)
