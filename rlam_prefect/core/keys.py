"""The cache key of a step. Used by the Prefect cache policy and by the engine, never duplicated.

key = SHA-256(action, action code version, validated params, input artifact hashes, environment,
and the digests of the data files the step declares it reads). No run id, no timestamp: the same
computation anywhere has the same key. A step that reads no declared file has no ``files`` part,
so its key is what it was before file inputs existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlam_prefect.core.hashing import canonical_json, sha256_hex


def key_parts(
    action: str,
    code_version: str,
    params: Mapping[str, Any],
    input_hashes: Mapping[str, str],
    env_hash: str,
    file_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The named parts of a key, kept so that a miss can be explained part by part.

    ``file_hashes`` is {param: sha256 of the file's bytes} for the step's declared data files.
    """
    parts: dict[str, Any] = {
        "action": action,
        "code_version": code_version,
        "params": dict(params),
        "input_hashes": dict(input_hashes),
        "env_hash": env_hash,
    }
    if file_hashes:
        parts["file_hashes"] = dict(file_hashes)
    return parts


def cache_key(
    action: str,
    code_version: str,
    params: Mapping[str, Any],
    input_hashes: Mapping[str, str],
    env_hash: str,
    file_hashes: Mapping[str, str] | None = None,
) -> str:
    parts = key_parts(action, code_version, params, input_hashes, env_hash, file_hashes)
    return sha256_hex(canonical_json(parts).encode())
