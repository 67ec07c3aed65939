from __future__ import annotations

import pytest

from tracker.core.secrets import (
    MASK,
    looks_secret,
    mask_argv,
    mask_secrets,
    strip_url_credentials,
)

SECRET_KEYS = [
    "key",
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "credentials",
    "auth",
    "WANDB_API_KEY",
    "OPENAI_API_KEY",
    "apiKey",
    "APIKey",
    "apikey",
    "x-api-key",
    "ssh_key",
    "api_key_2",
    "aws_secret_access_key",
    "aws_access_key_id",
    "db_password",
    "DB_PASSWORD",
    "dbPassword",
    "MY_PASSWORD",
    "HF_TOKEN",
    "GITHUB_TOKEN",
    "TRACKER_API_TOKEN",
    "refreshToken",
    "access-token",
    "use_auth_token",
    "auth_type",
    "Authorization",
    "client-secret",
    "clientSecret",
    "privateKey",
    "private",
    "credential",
    "credentials/user",
    "SLURM_JWT",
    "config/db/password",
    "env/HF_TOKEN",
    "config/service/api_key",
]

PLAIN_KEYS = [
    "keyboard",
    "monkey",
    "turnkey",
    "keys",
    "keywords",
    "hotkeys",
    "ignore_keys_for_eval",
    "num_key_value_heads",
    "key_dim",
    "tokenizer",
    "tokenizer_name",
    "num_tokens",
    "max_tokens",
    "max_new_tokens",
    "pad_token",
    "eos_token",
    "pad_token_id",
    "token_type_ids",
    "keras",
    "author",
    "authors",
    "passage",
    "PWD",
    "OLDPWD",
    "optimizer/lr",
    "model/tokenizer_name",
    "train/loss",
    "env/CUDA_VISIBLE_DEVICES",
    "",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_looking_keys(key: str) -> None:
    assert looks_secret(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys(key: str) -> None:
    assert not looks_secret(key)


def test_mask_secrets_replaces_only_secret_values() -> None:
    flat = {
        "optimizer/lr": 0.1,
        "WANDB_API_KEY": "abc123",
        "db/password": "hunter2",
        "num_tokens": 4096,
        "auth/port": 443,
    }
    assert mask_secrets(flat) == {
        "optimizer/lr": 0.1,
        "WANDB_API_KEY": MASK,
        "db/password": MASK,
        "num_tokens": 4096,
        "auth/port": MASK,
    }
    assert flat["db/password"] == "hunter2"  # the input is not modified


def test_mask_secrets_keeps_values_that_hold_nothing() -> None:
    flat = {"use_auth_token": True, "HF_TOKEN": "", "api_key": None}
    assert mask_secrets(flat) == flat


def test_mask_secrets_descends_into_nested_mappings() -> None:
    masked = mask_secrets({"db": {"host": "h", "password": "hunter2"}, "token": {"a": 1}})
    assert masked == {"db": {"host": "h", "password": MASK}, "token": MASK}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train.py", "--lr", "0.1"], ["train.py", "--lr", "0.1"]),
        (
            ["t.py", "--hf-token", "abc", "--epochs", "2"],
            ["t.py", "--hf-token", MASK, "--epochs", "2"],
        ),
        (["t.py", "--password=abc"], ["t.py", f"--password={MASK}"]),
        (["t.py", "--api_key", "--verbose"], ["t.py", "--api_key", "--verbose"]),
        (["t.py", "--max-tokens", "128"], ["t.py", "--max-tokens", "128"]),
    ],
)
def test_mask_argv(argv: list[str], expected: list[str]) -> None:
    assert mask_argv(argv) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:hunter2@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_abc@github.com/o/r.git", "https://github.com/o/r.git"),
        ("http://u:p@ss@host:8080/x", "http://host:8080/x"),
        ("ssh://git:pw@host/o/r.git", "ssh://git@host/o/r.git"),
        ("ssh://git@host/o/r.git", "ssh://git@host/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("/srv/repos/r.git", "/srv/repos/r.git"),
    ],
)
def test_strip_url_credentials(url: str, expected: str) -> None:
    assert strip_url_credentials(url) == expected
