"""The read side's access rules: loopback, tokens from settings and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest

from exectrack.consumer.read.access import token_ok
from exectrack.consumer.read.serve import ServeRefused, check_access
from exectrack.consumer.settings import Settings, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("10.0.0.5", False),
        ("reads.example.internal", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_READ__TOKENS", "alpha, beta\ngamma")
    settings = Settings()
    assert [t.get_secret_value() for t in settings.read.tokens] == ["alpha", "beta", "gamma"]
    assert "alpha" not in repr(settings)
    assert "alpha" not in str(settings.model_dump())
    assert token_ok("beta", settings)
    assert not token_ok("bet", settings)
    assert not token_ok("", settings)
    assert not token_ok(None, settings)


def test_tokens_and_replica_from_secret_files(tmp_path: Path) -> None:
    (tmp_path / "read__tokens").write_text("first\nsecond\n")
    (tmp_path / "read__database_url").write_text("mysql://ro:pw@replica:3306/exectrack")
    settings = Settings(_secrets_dir=tmp_path)
    assert [t.get_secret_value() for t in settings.read.tokens] == ["first", "second"]
    url = settings.read.database_url
    assert url is not None
    assert url.get_secret_value() == "mysql+aiomysql://ro:pw@replica:3306/exectrack"


def test_no_tokens_let_everyone_in_on_loopback() -> None:
    settings = Settings()
    assert settings.read.tokens == []
    assert token_ok(None, settings)
    check_access(settings)  # 127.0.0.1 by default: no tokens needed


def test_other_hosts_need_tokens() -> None:
    settings = Settings.model_validate({"read": {"host": "0.0.0.0"}})  # noqa: S104
    with pytest.raises(ServeRefused, match="EXECTRACK_READ__TOKENS") as refused:
        check_access(settings)
    assert "\n" not in str(refused.value)
    open_host = {"host": "0.0.0.0", "tokens": "t0ken-of-16-chars"}  # noqa: S104
    check_access(Settings.model_validate({"read": open_host}))


def test_read_database_url_follows_the_database_rules() -> None:
    with pytest.raises(ValueError, match="mysql"):
        Settings.model_validate({"read": {"database_url": "postgresql://x@y/z"}})


@pytest.mark.parametrize(
    "tokens", ['""', "''", '" "', "' , '", "short", "x" * 15, "ok-long-token-1234, tiny"]
)
def test_guessable_tokens_are_refused_at_start(tokens: str) -> None:
    settings = Settings.model_validate({"read": {"tokens": tokens}})
    with pytest.raises(ServeRefused, match="EXECTRACK_READ__TOKENS") as refused:
        check_access(settings)
    assert "\n" not in str(refused.value)
    assert "tiny" not in str(refused.value)
    assert "short" not in str(refused.value)


def test_tokens_of_16_characters_or_more_are_kept() -> None:
    check_access(Settings.model_validate({"read": {"tokens": "sixteen-chars-ok, " + "y" * 40}}))
