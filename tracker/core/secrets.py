"""Decide which keys and values look like secrets, and mask them.

Two rules, applied on every path into the store:

* the key rule: keys are split into words the way people name things (``snake_case``,
  ``kebab-case``, ``camelCase``, ``UPPER_CASE``, ``a/b`` paths), and the decision is made
  on whole words, so ``WANDB_API_KEY`` and ``db_password`` are masked while ``keyboard``,
  ``tokenizer_name`` and ``num_tokens`` are not;
* the value rule (``mask_text``): whatever the key, credentials inside a string are
  masked: the password of ``scheme://user:password@host``, ``Password=...`` in a
  connection string, and well-known token shapes (``hf_...``, ``ghp_...``, ``AKIA...``).

Example::

    >>> mask_secrets({"optimizer/lr": 0.1, "WANDB_API_KEY": "abc"})
    {'optimizer/lr': 0.1, 'WANDB_API_KEY': '********'}
    >>> mask_text("postgres://u:hunter2@db.local/runs")
    'postgres://u:********@db.local/runs'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "MASK",
    "looks_secret",
    "mask_argv",
    "mask_field",
    "mask_secrets",
    "mask_text",
    "strip_url_credentials",
]

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


# Paths repeat (every log of a str series, every resumed field), so the key rule is
# decided once per path; the bound keeps a script that invents paths from growing it.
_path_looks_secret = functools.lru_cache(maxsize=8192)(looks_secret)


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
        elif isinstance(value, str):
            masked[key] = mask_text(value)
        else:
            masked[key] = value
    return masked


def mask_field(path: str, value: object) -> object:
    """Apply both rules to one value stored under ``path``.

    A secret-looking path masks any value (except None, booleans and ""); otherwise a
    str goes through ``mask_text``, a list has its items masked under the same path
    and a dict in it its values under ``path/key``; anything else is returned as it is.

    >>> mask_field("config/hub_token", "hf_abc"), mask_field("config/lr", 0.1)
    ('********', 0.1)
    >>> mask_field("config/db", "postgres://u:pw@h/db")
    'postgres://u:********@h/db'
    """
    if _path_looks_secret(path):
        return MASK if _needs_mask(value) else value
    if isinstance(value, str):
        return mask_text(value)
    if type(value) is list:  # a config list may hold text, or dicts with secret keys
        return [mask_field(path, item) for item in value]
    if type(value) is dict:
        return {k: mask_field(f"{path}/{k}", v) for k, v in value.items()}
    return value


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
        # Whatever the option is called, its value may carry credentials itself
        # ("--db-url postgres://u:pw@h/db").
        out.append(mask_text(arg))
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


# -- the value rule ----------------------------------------------------------------------

# Credentials in a URL anywhere in a text. The user info runs to the last "@" before the
# host (passwords sometimes hold a raw "@"), but never across characters that a URL cannot
# hold unencoded (whitespace, '"', '<', '>', brackets, braces, '|', '\', '^', '`'): so a
# URL in prose does not swallow the words after it up to an unrelated e-mail address.
_URL_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<userinfo>[^\s/?#\"<>\[\]{}|\\^`]+)@"
)

# Schemes whose user name is itself often the credential (a token as the user of a git
# remote or a proxy URL): the whole user info goes, not only the password.
_TOKEN_USER_SCHEMES = frozenset({"http", "https", "ws", "wss"})

# key=value, as in connection strings (";Password=x;"), query strings (?token=x&) and
# keyword reprs (Namespace(hub_token='x')). The key must not follow a word character, so
# "max_tokens=5" is one key ("max_tokens", not a secret) rather than "tokens=5". The value
# is quoted ('...', "...", ODBC's {...}) or runs to ";" or whitespace, less the closing
# brackets and commas that end a repr ("f(token=abc)"): a password may hold "&" or ",",
# so more is masked rather than part of a password left behind.
_ASSIGNMENT = re.compile(
    r"(?<![\w.])(?P<key>[A-Za-z_][\w.-]{0,63})=(?!=)"
    r"(?P<value>\"[^\"]*\"?|'[^']*'?|\{[^}]*\}?"
    r"|[^;\s\"'][^;\s]*?(?=[),\]}]{0,8}(?:[;\s]|$)))"
)

# Keys of connection and query strings that hold a secret but that the key rule, made
# for configuration names, does not call secret ("PWD" is the working directory as an
# environment variable name, but ODBC's password as a connection-string key).
_CONNECTION_SECRET_KEYS = frozenset(
    {"pwd", "pass", "pw", "sig", "sharedaccesssignature", "x-amz-signature", "x-goog-signature"}
)

# 'key': 'value' and "key": "value", as in dict reprs and JSON inside a message.
_QUOTED_PAIR = re.compile(
    r"(?P<kq>[\"'])(?P<key>[A-Za-z_][\w./-]{0,63})(?P=kq)\s*:\s*"
    r"(?P<value>\"[^\"]*\"|'[^']*')"
)

# Token shapes that cannot be mistaken for ML names: a fixed vendor prefix and a long
# random body. The prefix is kept, so the mask still says what kind of token was there.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?P<hf>hf_)[A-Za-z0-9]{30,}"
    r"|(?P<github>gh[pousr]_)[A-Za-z0-9]{30,}"
    r"|(?P<github_pat>github_pat_)[A-Za-z0-9_]{30,}"
    # OpenAI / Anthropic style: a digit somewhere, so "sk-learn-..." names are not keys.
    r"|(?P<sk>sk-(?:proj-|ant-|svcacct-|admin-)?)(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
    r"|(?P<aws>AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"
    r"|(?P<slack>xox[abposr]-)[A-Za-z0-9-]{10,}"
    r"|(?P<google>AIza)[0-9A-Za-z_-]{35}"
    r"|(?P<jwt>eyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|(?P<bearer>(?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*"
    r")"
)

# The shortest text any token shape above can match ("AKIA" + 16); shorter strings (most
# names, optimizers, activation functions) skip the token scan.
_MIN_TOKEN_LEN = 20


def _mask_url(match: re.Match[str]) -> str:
    scheme, userinfo = match.group("scheme"), match.group("userinfo")
    if scheme.lower().rpartition("+")[2] in _TOKEN_USER_SCHEMES:  # git+https too
        return f"{scheme}://{MASK}@"
    user, sep, password = userinfo.partition(":")
    if not sep or not password:
        return match.group(0)  # ssh://git@host, postgres://user@host: no password
    return f"{scheme}://{user}:{MASK}@"


# Values that say a credential was switched off or unset rather than hold one.
_NOT_SECRET_VALUES = frozenset({"True", "False", "None", "true", "false", "null", "none"})


def _masked_value(value: str) -> str:
    if value in _NOT_SECRET_VALUES or value in ('""', "''", "{}"):
        return value
    # Keep the quotes or braces around a value: they show how it was written.
    if len(value) >= 2 and value[0] in "\"'{" and value[-1] == {"{": "}"}.get(value[0], value[0]):
        return f"{value[0]}{MASK}{value[-1]}"
    return MASK


def _key_is_secret(key: str) -> bool:
    return key.lower() in _CONNECTION_SECRET_KEYS or _path_looks_secret(key)


def _mask_assignment(match: re.Match[str]) -> str:
    key = match.group("key")
    if not _key_is_secret(key):
        return match.group(0)
    return f"{key}={_masked_value(match.group('value'))}"


def _mask_quoted_pair(match: re.Match[str]) -> str:
    key = match.group("key")
    if not _key_is_secret(key):
        return match.group(0)
    head = match.group(0)[: match.start("value") - match.start(0)]
    return head + _masked_value(match.group("value"))


def _mask_token(match: re.Match[str]) -> str:
    return f"{match.group(match.lastgroup or '')}{MASK}"


def mask_text(text: str) -> str:
    """Mask credentials inside ``text``, keeping what helps debugging.

    URL passwords (``scheme://user:********@host``; for http(s) the user too, as it is
    often a token), secret values of ``key=value`` pairs (``Password=``, ``pwd=``,
    ``token=``, whatever the key rule calls secret), of ``'key': 'value'`` pairs, and
    well-known token shapes (Hugging Face, GitHub, OpenAI, AWS, Slack, Google, JWT,
    ``Bearer ...``). Text without any of them is returned as it is; the common case
    costs a few substring checks.

    >>> mask_text("postgres://u:pw@h/db")
    'postgres://u:********@h/db'
    >>> mask_text("https://user:tok@host/x")
    'https://********@host/x'
    >>> mask_text('Server=x;Pwd="a;b";Database=y')
    'Server=x;Pwd="********";Database=y'
    >>> mask_text("bert-base-uncased"), mask_text("git@github.com:org/repo")
    ('bert-base-uncased', 'git@github.com:org/repo')
    """
    # Each rule runs only when the character it cannot match without is present: most
    # values are names and numbers, and this runs on every str value stored.
    if "@" in text and "://" in text:
        text = _URL_IN_TEXT.sub(_mask_url, text)
    if "=" in text:
        text = _ASSIGNMENT.sub(_mask_assignment, text)
    if ":" in text and ("'" in text or '"' in text):
        text = _QUOTED_PAIR.sub(_mask_quoted_pair, text)
    if len(text) >= _MIN_TOKEN_LEN:
        text = _TOKEN.sub(_mask_token, text)
    return text
