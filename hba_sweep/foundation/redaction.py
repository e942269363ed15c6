"""Credentials never printed: the one redaction every printer uses (CLI errors, logs, manifests).

``redact(uri)`` hides the secrets of one path or URI; ``redact_text(text)`` does the same for every
URI inside a message or a traceback.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_OPTIONS = ("access_key", "secret_key", "session_token", "password", "token", "credential", "secret")
MASK = "***"
# scheme://rest, up to whitespace or a character that usually closes a quoted path in a message
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}`,]+")
# a secret option outside a URI, e.g. echoed back by a storage library: secret_key=...
_OPTION = re.compile(r"\b(\w*(?:" + "|".join(SECRET_OPTIONS) + r")\w*)=(?!\*\*\*)([^\s&'\",;)]+)", re.IGNORECASE)


def redact(path: str) -> str:
    """A path or URI fit to print or record: credentials in the URI (``user:password@``,
    ``secret_key=``, ``access_key=``, ``session_token=``, ...) replaced by ``***``."""
    if "://" not in path:
        return path
    try:
        url = urlsplit(path)
    except ValueError:  # malformed (e.g. an unbalanced '[' in the host): hide everything after the scheme
        return path.split("://", 1)[0] + "://" + MASK
    pairs = parse_qsl(url.query, keep_blank_values=True)
    secret = [any(s in k.lower() for s in SECRET_OPTIONS) for k, _ in pairs]
    if "@" not in url.netloc and not any(secret):
        return path
    netloc = f"{MASK}@" + url.netloc.rsplit("@", 1)[1] if "@" in url.netloc else url.netloc
    query = [(k, MASK if hide else v) for (k, v), hide in zip(pairs, secret, strict=False)]
    return urlunsplit(url._replace(netloc=netloc, query=urlencode(query, safe="*:/")))


def redact_text(text: str) -> str:
    """``text`` with every URI in it redacted (messages, tracebacks, log lines)."""

    def one(match: re.Match) -> str:
        uri = match.group(0)
        core = uri.rstrip(":.;")  # "s3://.../x: cannot open" -- the colon belongs to the message
        return redact(core) + uri[len(core) :]

    text = _URI.sub(one, text)
    return _OPTION.sub(lambda m: f"{m.group(1)}={MASK}", text)
