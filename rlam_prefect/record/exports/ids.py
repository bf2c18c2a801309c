"""Identifiers in exports are built from rlam's own ids and hashes, never from text as it was recorded.

Action names, parameters and reasons can come from a planner (untrusted text: a model may invent
an action called ``"><script>`` or ``a b#c``). Such text is written as a value (a name, a label, a
literal), and where an identifier must mention it, it is percent-encoded first: the result is a
valid IRI segment (RFC 3987), a valid PROV local name and an OpenLineage job name without
separators of its own, so JSON-LD processors keep the entity and nothing can pose as a path or
a namespace.
"""

from __future__ import annotations

import hashlib
import urllib.parse

# RFC 3986 "unreserved" characters; everything else is percent-encoded (UTF-8 bytes)
_SAFE = "-._~"
PRODUCER = "https://w3id.org/rlam-prefect"  # the project's identifier: OpenLineage producer, RO-Crate tool ids


def segment(text: str) -> str:
    """``text`` as one IRI path segment / name part: unreserved characters kept, the rest percent-encoded."""
    encoded = urllib.parse.quote(text, safe=_SAFE)
    return encoded or "%00-empty"  # quote("") is "", which would collapse a path


def short_hash(*parts: str, length: int = 12) -> str:
    """A short stable digest of ``parts`` (for ids that must stay short whatever the text was)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:length]


def version_tag(code_version: str | None) -> str:
    """The hex part of a recorded ``sha256:...`` code version, shortened; 'unknown' when not recorded."""
    if not code_version:
        return "unknown"
    tail = code_version.rsplit(":", 1)[-1]
    return tail[:12] if all(c in "0123456789abcdef" for c in tail) and tail else short_hash(code_version)


def action_iri(action: str, code_version: str | None) -> str:
    """An absolute IRI for an action at one code version (the tool of a Process Run Crate)."""
    return f"{PRODUCER}/action/{segment(action)}/{version_tag(code_version)}"
