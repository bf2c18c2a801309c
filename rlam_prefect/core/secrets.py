"""Secrets never reach a file: every string the trace writer stores passes through ``redact``."""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(API_KEY|APIKEY|TOKEN|SECRET|PASSWORD|ACCESS_KEY)", re.IGNORECASE)
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,})\b")
MIN_SECRET_LENGTH = 8


def secret_values() -> list[tuple[str, str]]:
    """(name, value) of every secret-looking environment variable, read now (the environment may change)."""
    return [(name, value) for name, value in os.environ.items() if len(value) >= MIN_SECRET_LENGTH and _SECRET_NAME.search(name)]


def redact(text: str, secrets: list[tuple[str, str]] | None = None) -> str:
    """Replace the values of secret-looking environment variables and key-shaped tokens.

    Pass ``secrets`` (from ``secret_values``) when redacting many strings at once: scanning the
    environment per string was most of the cost of writing a trace row.
    """
    for name, value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, f"[redacted {name}]")
    return _KEY_SHAPES.sub("[redacted key]", text)
