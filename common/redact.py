"""Credentials never leave the process in text: URLs and error messages are shown without their passwords."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: ``scheme://user:password@`` anywhere in a text.
_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s@/]+@")


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host``, ``postgresql://user:***@host/db``).

    >>> redact_url("redis://:s3cret@redis:6379/0")
    'redis://:***@redis:6379/0'
    >>> redact_url("sqlite:///tmp/mlflow.db")
    'sqlite:///tmp/mlflow.db'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced (error messages quote connection strings).

    >>> redact_text("could not connect to postgresql://bnpl:hunter2@db:5432/mlflow (timeout)")
    'could not connect to postgresql://bnpl:***@db:5432/mlflow (timeout)'
    """
    return _CREDENTIALS.sub(r"\1:***@", text)
