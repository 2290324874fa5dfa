"""The configuration truth table of API.md, row by row.

Every reader is called with an explicit mapping, so the tests never depend on the
environment of the machine running them (one test checks the ``os.environ`` default).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from bgjobs.config import (
    get_scheduling_mode,
    get_trigger_dev_config,
    should_use_trigger_dev,
)
from bgjobs.types import TriggerDevConfig

KEY = "tr_prod_s3cr3t_k3y_value"

# A Trigger.dev setup that should_use_trigger_dev() accepts once the app runs in production.
FULL = {
    "TRIGGER_DEV_ENABLED": "1",
    "TRIGGER_DEV_API_KEY": KEY,
    "TRIGGER_DEV_API_URL": "https://trigger.example.com",
}
FULL_PROD = {**FULL, "BGJOBS_ENV": "production"}

# --- get_scheduling_mode ------------------------------------------------------------------

MODE_ROWS = [
    # (id, env, expected mode)
    ("nothing-set-is-local", {}, "local"),
    ("forced-local", {"BGJOBS_MODE": "local"}, "local"),
    ("forced-vercel", {"BGJOBS_MODE": "vercel"}, "vercel"),
    ("forced-disabled", {"BGJOBS_MODE": "disabled"}, "disabled"),
    ("forced-trigger-dev-without-config", {"BGJOBS_MODE": "trigger-dev"}, "trigger-dev"),
    ("forced-mode-is-case-insensitive", {"BGJOBS_MODE": " Vercel "}, "vercel"),
    ("empty-forced-mode-counts-as-unset", {"BGJOBS_MODE": ""}, "local"),
    ("blank-forced-mode-counts-as-unset", {"BGJOBS_MODE": "   ", "VERCEL": "1"}, "vercel"),
    (
        "forced-mode-beats-disable-auto-sync",
        {"BGJOBS_MODE": "local", "DISABLE_AUTO_SYNC": "1"},
        "local",
    ),
    ("forced-mode-beats-trigger-dev", {**FULL_PROD, "BGJOBS_MODE": "local"}, "local"),
    ("forced-mode-beats-vercel", {"BGJOBS_MODE": "local", "VERCEL": "1"}, "local"),
    ("disable-auto-sync-1", {"DISABLE_AUTO_SYNC": "1"}, "disabled"),
    ("disable-auto-sync-true", {"DISABLE_AUTO_SYNC": "true"}, "disabled"),
    ("disable-auto-sync-TRUE", {"DISABLE_AUTO_SYNC": "TRUE"}, "disabled"),
    ("disable-auto-sync-yes", {"DISABLE_AUTO_SYNC": "yes"}, "disabled"),
    ("disable-auto-sync-on", {"DISABLE_AUTO_SYNC": "on"}, "disabled"),
    ("disable-auto-sync-bool-True", {"DISABLE_AUTO_SYNC": True}, "disabled"),
    ("disable-auto-sync-0-is-falsy", {"DISABLE_AUTO_SYNC": "0"}, "local"),
    ("disable-auto-sync-false-is-falsy", {"DISABLE_AUTO_SYNC": "false"}, "local"),
    ("disable-auto-sync-empty-is-falsy", {"DISABLE_AUTO_SYNC": ""}, "local"),
    ("disable-auto-sync-beats-trigger-dev", {**FULL_PROD, "DISABLE_AUTO_SYNC": "1"}, "disabled"),
    ("disable-auto-sync-beats-vercel", {"DISABLE_AUTO_SYNC": "yes", "VERCEL": "1"}, "disabled"),
    ("trigger-dev-in-production", FULL_PROD, "trigger-dev"),
    ("trigger-dev-app-env-fallback", {**FULL, "APP_ENV": "production"}, "trigger-dev"),
    (
        "trigger-dev-bgjobs-env-beats-app-env",
        {**FULL, "BGJOBS_ENV": "development", "APP_ENV": "production"},
        "local",
    ),
    ("trigger-dev-production-any-case", {**FULL, "BGJOBS_ENV": "Production"}, "trigger-dev"),
    ("trigger-dev-beats-vercel", {**FULL_PROD, "VERCEL": "1"}, "trigger-dev"),
    ("trigger-dev-not-in-development", FULL, "local"),
    ("trigger-dev-not-in-staging", {**FULL, "BGJOBS_ENV": "staging"}, "local"),
    ("trigger-dev-not-when-disabled", {**FULL_PROD, "TRIGGER_DEV_ENABLED": "0"}, "local"),
    (
        "trigger-dev-not-when-enabled-unset",
        {k: v for k, v in FULL_PROD.items() if k != "TRIGGER_DEV_ENABLED"},
        "local",
    ),
    (
        "trigger-dev-not-without-key",
        {k: v for k, v in FULL_PROD.items() if k != "TRIGGER_DEV_API_KEY"},
        "local",
    ),
    (
        "trigger-dev-not-with-invalid-url",
        {**FULL_PROD, "TRIGGER_DEV_API_URL": "not a url"},
        "local",
    ),
    (
        "trigger-dev-secret-key-fallback",
        {"TRIGGER_DEV_ENABLED": "yes", "TRIGGER_SECRET_KEY": KEY, "APP_ENV": "production"},
        "trigger-dev",
    ),
    (
        "partial-trigger-dev-falls-to-vercel",
        {"TRIGGER_DEV_ENABLED": "1", "BGJOBS_ENV": "production", "VERCEL": "1"},
        "vercel",
    ),
    ("vercel-1", {"VERCEL": "1"}, "vercel"),
    ("vercel-0-is-local", {"VERCEL": "0"}, "local"),
    ("vercel-empty-is-local", {"VERCEL": ""}, "local"),
]


@pytest.mark.parametrize(
    ("env", "expected"), [pytest.param(env, mode, id=name) for name, env, mode in MODE_ROWS]
)
def test_scheduling_mode_truth_table(env: Dict[str, Any], expected: str) -> None:
    assert get_scheduling_mode(env) == expected


@pytest.mark.parametrize("value", ["bogus", "LOCALLY", "trigger_dev", "off"])
def test_unknown_forced_mode_is_a_value_error_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match=value):
        get_scheduling_mode({"BGJOBS_MODE": value})


def test_unknown_forced_mode_error_lists_the_valid_modes() -> None:
    with pytest.raises(ValueError) as excinfo:
        get_scheduling_mode({"BGJOBS_MODE": "cloud"})
    message = str(excinfo.value)
    for mode in ("trigger-dev", "vercel", "local", "disabled"):
        assert mode in message


def test_readers_default_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BGJOBS_MODE",
        "DISABLE_AUTO_SYNC",
        "VERCEL",
        "TRIGGER_DEV_ENABLED",
        "TRIGGER_DEV_API_KEY",
        "TRIGGER_SECRET_KEY",
        "TRIGGER_DEV_API_URL",
        "TRIGGER_API_URL",
        "TRIGGER_DEV_ENVIRONMENT",
        "BGJOBS_ENV",
        "APP_ENV",
    ):
        monkeypatch.delenv(name, raising=False)
    assert get_scheduling_mode() == "local"
    monkeypatch.setenv("VERCEL", "1")
    assert get_scheduling_mode() == "vercel"
    for name, value in FULL_PROD.items():
        monkeypatch.setenv(name, value)
    assert should_use_trigger_dev() is True
    assert get_trigger_dev_config().api_key == KEY
    assert get_scheduling_mode() == "trigger-dev"


def test_environment_is_read_on_every_call_not_cached() -> None:
    env: Dict[str, str] = {}
    assert get_scheduling_mode(env) == "local"
    env["DISABLE_AUTO_SYNC"] = "1"
    assert get_scheduling_mode(env) == "disabled"


# --- should_use_trigger_dev ---------------------------------------------------------------

SHOULD_ROWS = [
    ("full-enabled-production", FULL_PROD, True),
    ("app-env-production", {**FULL, "APP_ENV": "production"}, True),
    (
        "bgjobs-env-wins-over-app-env",
        {**FULL, "BGJOBS_ENV": "staging", "APP_ENV": "production"},
        False,
    ),
    ("default-environment-is-development", FULL, False),
    ("not-enabled", {**FULL_PROD, "TRIGGER_DEV_ENABLED": "no"}, False),
    ("no-key", {"TRIGGER_DEV_ENABLED": "1", "BGJOBS_ENV": "production"}, False),
    ("bad-url", {**FULL_PROD, "TRIGGER_DEV_API_URL": "ftp://trigger.example.com"}, False),
    ("nothing", {}, False),
]


@pytest.mark.parametrize(
    ("env", "expected"), [pytest.param(env, exp, id=name) for name, env, exp in SHOULD_ROWS]
)
def test_should_use_trigger_dev_truth_table(env: Dict[str, Any], expected: bool) -> None:
    assert should_use_trigger_dev(env) is expected


# --- get_trigger_dev_config ---------------------------------------------------------------

CONFIG_ROWS = [
    # (id, env, enabled, api_key, api_url, environment, fully, partially)
    ("nothing-set", {}, False, None, "https://api.trigger.dev", "development", False, False),
    (
        "key-only-uses-default-url",
        {"TRIGGER_DEV_API_KEY": KEY},
        False,
        KEY,
        "https://api.trigger.dev",
        "production",
        True,
        False,
    ),
    (
        "secret-key-fallback",
        {"TRIGGER_SECRET_KEY": KEY},
        False,
        KEY,
        "https://api.trigger.dev",
        "production",
        True,
        False,
    ),
    (
        "dev-key-wins-over-secret-key",
        {"TRIGGER_DEV_API_KEY": KEY, "TRIGGER_SECRET_KEY": "other"},
        False,
        KEY,
        "https://api.trigger.dev",
        "production",
        True,
        False,
    ),
    (
        "empty-dev-key-falls-back-to-secret-key",
        {"TRIGGER_DEV_API_KEY": "", "TRIGGER_SECRET_KEY": KEY},
        False,
        KEY,
        "https://api.trigger.dev",
        "production",
        True,
        False,
    ),
    (
        "api-url-fallback",
        {"TRIGGER_DEV_API_KEY": KEY, "TRIGGER_API_URL": "http://localhost:3030"},
        False,
        KEY,
        "http://localhost:3030",
        "production",
        True,
        False,
    ),
    (
        "dev-url-wins-over-api-url",
        {
            "TRIGGER_DEV_API_KEY": KEY,
            "TRIGGER_DEV_API_URL": "https://a.example",
            "TRIGGER_API_URL": "https://b.example",
        },
        False,
        KEY,
        "https://a.example",
        "production",
        True,
        False,
    ),
    (
        "enabled-1",
        {"TRIGGER_DEV_ENABLED": "1"},
        True,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "enabled-true",
        {"TRIGGER_DEV_ENABLED": "true"},
        True,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "enabled-yes",
        {"TRIGGER_DEV_ENABLED": "YES"},
        True,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "enabled-on",
        {"TRIGGER_DEV_ENABLED": "on"},
        True,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "enabled-bool",
        {"TRIGGER_DEV_ENABLED": True},
        True,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "enabled-0-is-false",
        {"TRIGGER_DEV_ENABLED": "0"},
        False,
        None,
        "https://api.trigger.dev",
        "development",
        False,
        True,
    ),
    (
        "url-only-is-partial",
        {"TRIGGER_DEV_API_URL": "https://t.example"},
        False,
        None,
        "https://t.example",
        "development",
        False,
        True,
    ),
    (
        "key-with-invalid-url-is-partial",
        {"TRIGGER_DEV_API_KEY": KEY, "TRIGGER_DEV_API_URL": "trigger.example.com"},
        False,
        KEY,
        "trigger.example.com",
        "production",
        False,
        True,
    ),
    (
        "environment-only-is-partial",
        {"TRIGGER_DEV_ENVIRONMENT": "staging"},
        False,
        None,
        "https://api.trigger.dev",
        "staging",
        False,
        True,
    ),
    (
        "environment-production",
        {**FULL, "TRIGGER_DEV_ENVIRONMENT": "production"},
        True,
        KEY,
        "https://trigger.example.com",
        "production",
        True,
        False,
    ),
    (
        "fully-configured-and-enabled",
        FULL,
        True,
        KEY,
        "https://trigger.example.com",
        "production",
        True,
        False,
    ),
]


@pytest.mark.parametrize(
    ("env", "enabled", "api_key", "api_url", "environment", "fully", "partially"),
    [pytest.param(*row[1:], id=row[0]) for row in CONFIG_ROWS],
)
def test_trigger_dev_config_truth_table(
    env: Dict[str, Any],
    enabled: bool,
    api_key: Optional[str],
    api_url: str,
    environment: str,
    fully: bool,
    partially: bool,
) -> None:
    config = get_trigger_dev_config(env)
    assert config.enabled is enabled
    assert config.api_key == api_key
    assert config.api_url == api_url
    assert config.environment == environment
    assert config.is_fully_configured is fully
    assert config.is_partially_configured is partially


def test_unknown_trigger_dev_environment_is_never_used_and_is_named() -> None:
    env = {
        **FULL,
        "TRIGGER_DEV_ENABLED": "1",
        "BGJOBS_ENV": "production",
        "TRIGGER_DEV_ENVIRONMENT": "prod-eu",
    }
    config = get_trigger_dev_config(env)
    assert not config.is_fully_configured
    assert config.is_partially_configured
    assert "prod-eu" in (config.problem or "")
    # A typo must not break the other modes: the app falls back to local, with a warning.
    assert get_scheduling_mode(env) == "local"
    from bgjobs.triggerdev import TriggerDevJobManager

    with pytest.raises(ValueError, match="prod-eu"):
        TriggerDevJobManager(config, env={})


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(FULL, id="dev-api-key"),
        pytest.param({"TRIGGER_SECRET_KEY": KEY}, id="secret-key-fallback"),
    ],
)
def test_config_repr_and_str_never_show_the_api_key(env: Dict[str, Any]) -> None:
    config = get_trigger_dev_config(env)
    assert config.api_key == KEY
    for text in (repr(config), str(config), f"{config}", f"{config!r}"):
        assert KEY not in text
        assert "api_key=" in text  # the field is still mentioned, just masked


def test_config_repr_says_when_no_key_is_set() -> None:
    assert "api_key=None" in repr(TriggerDevConfig())
