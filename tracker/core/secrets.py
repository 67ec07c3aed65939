"""Decide which keys look like secrets and mask their values.

Keys are split into words the way people name things (``snake_case``, ``kebab-case``,
``camelCase``, ``UPPER_CASE``, ``a/b`` paths), and the decision is made on whole words,
so ``WANDB_API_KEY`` and ``db_password`` are masked while ``keyboard``, ``tokenizer_name``
and ``num_tokens`` are not.

Example::

    >>> mask_secrets({"optimizer/lr": 0.1, "WANDB_API_KEY": "abc"})
    {'optimizer/lr': 0.1, 'WANDB_API_KEY': '********'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["MASK", "looks_secret", "mask_argv", "mask_secrets", "strip_url_credentials"]

MASK = "********"

# A word from any of these makes the whole key secret, wherever it appears.
_ALWAYS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "credential",
        "credentials",
        "creds",
        "auth",
        "oauth",
        "authorization",
        "private",
        "jwt",
        "apikey",
        "apitoken",
        "accesstoken",
        "secretkey",
        "privatekey",
    }
)

# Words that turn a following "key"/"keys"/"token"/"tokens" into a credential even when
# more words follow ("api_key_value", "access_key_id").
_CREDENTIAL_QUALIFIERS = frozenset({"api", "access", "secret", "private", "auth", "session"})

# "pad_token" or "max_token" name a vocabulary item or a count in ML configs, not a
# credential, so a "token" right after one of these words is left alone.
_ML_TOKEN_QUALIFIERS = frozenset(
    {
        "pad",
        "eos",
        "bos",
        "unk",
        "sep",
        "cls",
        "mask",
        "start",
        "end",
        "stop",
        "special",
        "image",
        "audio",
        "video",
        "vision",
        "new",
        "max",
        "min",
        "num",
        "n",
        "total",
        "per",
    }
)

# Shell variables named exactly like this are the working directory, not a password.
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})

# An acronym run before a capitalised word ("APIKey" -> API, Key), a capitalised or
# lower-case word, an all-caps run, or digits.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

# Greedy up to the last "@" before the path, since passwords sometimes hold a raw "@".
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#]*)@")


def _words(segment: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(segment) if not w.isdigit()]


def _segment_is_secret(segment: str) -> bool:
    if segment in _NOT_SECRET_NAMES:
        return False
    words = _words(segment)
    last = len(words) - 1
    for i, word in enumerate(words):
        if word in _ALWAYS:
            return True
        previous = words[i - 1] if i > 0 else ""
        if word in ("key", "keys", "token", "tokens") and previous in _CREDENTIAL_QUALIFIERS:
            return True
        # A trailing "key" ("key", "ssh_key", "WANDB_API_KEY") names a key; one in the
        # middle is usually ML vocabulary ("num_key_value_heads", "key_dim").
        if word == "key" and i == last:
            return True
        if word == "token" and i == last and previous not in _ML_TOKEN_QUALIFIERS:
            return True
    return False


def looks_secret(key: str) -> bool:
    """Return True when any ``/``-separated segment of ``key`` names a credential.

    >>> looks_secret("env/HF_TOKEN"), looks_secret("model/tokenizer_name")
    (True, False)
    """
    return any(_segment_is_secret(segment) for segment in key.split("/"))


def _needs_mask(value: object) -> bool:
    # None, booleans and empty strings cannot hold a secret; keeping them shows that a
    # credential was unset or switched off, which helps when debugging a run.
    return not (value is None or isinstance(value, bool) or value == "")


def mask_secrets(flat: Mapping[str, object]) -> dict[str, object]:
    """Return a copy of ``flat`` with the values of secret-looking keys replaced by MASK.

    Nested mappings under keys that do not look secret are masked the same way.

    >>> mask_secrets({"db/password": "hunter2", "db/host": "localhost"})
    {'db/password': '********', 'db/host': 'localhost'}
    """
    masked: dict[str, object] = {}
    for key, value in flat.items():
        if looks_secret(str(key)):
            masked[key] = MASK if _needs_mask(value) else value
        elif isinstance(value, Mapping):
            masked[key] = mask_secrets(value)
        else:
            masked[key] = value
    return masked


def mask_argv(argv: Sequence[str]) -> list[str]:
    """Mask the values of secret-looking command-line options.

    Both ``--api-key=VALUE`` and ``--api-key VALUE`` are handled.

    >>> mask_argv(["train.py", "--lr", "0.1", "--hf-token", "abc", "--password=x"])
    ['train.py', '--lr', '0.1', '--hf-token', '********', '--password=********']
    """
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("-"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        if arg.startswith("-") and len(arg) > 1:
            name, sep, value = arg.partition("=")
            if looks_secret(name.lstrip("-")):
                if sep:
                    out.append(f"{name}={MASK}" if value else arg)
                    continue
                mask_next = True
        out.append(arg)
    return out


def strip_url_credentials(url: str) -> str:
    """Remove a password, or for http(s) the whole ``user[:password]@`` part, from a URL.

    For http(s) a token is often passed as the user name, so the user goes too; an
    ssh user such as ``git@`` is kept because ssh never carries a password in the URL.

    >>> strip_url_credentials("https://user:hunter2@github.com/org/repo.git")
    'https://github.com/org/repo.git'
    """
    match = _URL_USERINFO.match(url)
    if match is None:
        return url
    scheme, userinfo = match.group("scheme"), match.group("userinfo")
    user = userinfo.partition(":")[0]
    kept = f"{user}@" if user and scheme.lower() not in ("http", "https") else ""
    return f"{scheme}://{kept}{url[match.end() :]}"
