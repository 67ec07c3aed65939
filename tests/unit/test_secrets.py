from __future__ import annotations

import pytest

from tracker.core.secrets import (
    MASK,
    looks_secret,
    mask_argv,
    mask_field,
    mask_secrets,
    mask_text,
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
        # By value, whatever the option is called.
        (
            ["t.py", "--db-url", "postgres://u:pw@h/db"],
            ["t.py", "--db-url", f"postgres://u:{MASK}@h/db"],
        ),
        (["t.py", "--remote=https://tok@h/x"], ["t.py", f"--remote=https://{MASK}@h/x"]),
        (["t.py", "--data", "s3://bucket/key"], ["t.py", "--data", "s3://bucket/key"]),
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


HF_TOKEN = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3"
GH_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"

MASKED_TEXTS = [
    # URLs: the password goes, the user stays (http(s): the user goes too, often a token).
    ("postgres://u:pw@h/db", f"postgres://u:{MASK}@h/db"),
    ("postgresql+psycopg2://admin:p@ss@db:5432/x", f"postgresql+psycopg2://admin:{MASK}@db:5432/x"),
    ("redis://:pw@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
    ("https://user:tok@host/x", f"https://{MASK}@host/x"),
    ("https://ghp_tok@github.com/o/r.git", f"https://{MASK}@github.com/o/r.git"),
    ("git+https://u:pw@github.com/o/r", f"git+https://{MASK}@github.com/o/r"),
    (
        "OperationalError: could not connect to postgres://u:pw@h:5432/db (timeout)",
        f"OperationalError: could not connect to postgres://u:{MASK}@h:5432/db (timeout)",
    ),
    ('url = "mongodb://u:pw@h/x"', f'url = "mongodb://u:{MASK}@h/x"'),
    # Connection strings.
    ("Server=x;Password=abc;Database=y", f"Server=x;Password={MASK};Database=y"),
    ("Server=x;pwd=abc", f"Server=x;pwd={MASK}"),
    ('Server=x;Pwd="a;b";Database=y', f'Server=x;Pwd="{MASK}";Database=y'),
    ("DRIVER={SQL};UID=sa;PWD={a;b};", f"DRIVER={{SQL}};UID=sa;PWD={{{MASK}}};"),
    ("AccountName=a;AccountKey=abc==;Suffix=x", f"AccountName=a;AccountKey={MASK};Suffix=x"),
    ("https://h/x?sig=abc", f"https://h/x?sig={MASK}"),
    # Keyword and dict reprs, JSON.
    (
        "Namespace(lr=0.1, hub_token='abc', max_tokens=5, use_auth_token=True)",
        f"Namespace(lr=0.1, hub_token='{MASK}', max_tokens=5, use_auth_token=True)",
    ),
    ("f(api_key=abc)", f"f(api_key={MASK})"),
    ("--password=abc", f"--password={MASK}"),
    ("{'hub_token': 'abc', 'lr': 0.1}", f"{{'hub_token': '{MASK}', 'lr': 0.1}}"),
    (
        '{"password": "abc", "pad_token": "<pad>"}',
        f'{{"password": "{MASK}", "pad_token": "<pad>"}}',
    ),
    # Token shapes, prefix kept.
    (f"login with {HF_TOKEN} now", f"login with hf_{MASK} now"),
    (GH_TOKEN, f"ghp_{MASK}"),
    ("sk-proj-abc123def456ghi789jkl012", f"sk-proj-{MASK}"),
    ("key AKIAIOSFODNN7EXAMPLE", f"key AKIA{MASK}"),
    ("Authorization: Bearer abcdefghijklmnop1234", f"Authorization: Bearer {MASK}"),
]


@pytest.mark.parametrize(("text", "expected"), MASKED_TEXTS)
def test_mask_text_masks_credentials(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize(("text", "expected"), MASKED_TEXTS)
def test_mask_text_is_idempotent(text: str, expected: str) -> None:
    # Values can be masked on more than one path (config= and then the assignment).
    assert mask_text(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "bert-base-uncased",
        "meta-llama/Llama-2-7b-hf",
        "s3://bucket/key",
        "gs://bucket/path/to/shard-00001-of-00100.tfrecord",
        "user@example.com",
        "git@github.com:org/repo.git",
        "ssh://git@host/o/r.git",
        "postgres://user@db.local/runs",
        "https://huggingface.co/bert-base-uncased",
        "see https://a.example.com and write to x@y.com",
        "hf_hub_download",
        "sk-learn-compatible-estimator-wrapper",
        "AKIA is not a key on its own",
        "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",  # a git commit
        "lr=0.1;batch_size=32;max_tokens=512;pad_token=0",
        "Namespace(use_auth_token=True, token=None, api_key='')",
        "a==b",
        "/data/imagenet/train/n01440764/n01440764_10026.JPEG",
        "loss went up at step 1000: lr was too high",
        "",
    ],
)
def test_mask_text_keeps_ordinary_strings(text: str) -> None:
    assert mask_text(text) == text


def test_mask_field_applies_the_key_rule_then_the_value_rule() -> None:
    assert mask_field("config/hub_token", "abc") == MASK
    assert mask_field("config/auth/port", 443) == MASK
    assert mask_field("config/use_auth_token", True) is True
    assert mask_field("config/db", "postgres://u:pw@h/db") == f"postgres://u:{MASK}@h/db"
    assert mask_field("config/lr", 0.1) == 0.1
    assert mask_field("config/name", "bert") == "bert"


def test_mask_secrets_masks_values_by_pattern_too() -> None:
    masked = mask_secrets({"db": {"url": "postgres://u:pw@h/db"}, "lr": 0.1})
    assert masked == {"db": {"url": f"postgres://u:{MASK}@h/db"}, "lr": 0.1}


def test_mask_text_stays_fast_on_hostile_input() -> None:
    import time

    started = time.perf_counter()
    for text in ("x=" + ")" * 100_000, "password=" + "a," * 50_000, "https://" + "a@" * 50_000):
        mask_text(text)
    assert time.perf_counter() - started < 2.0
