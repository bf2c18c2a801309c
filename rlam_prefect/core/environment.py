"""Environment fingerprint: what, besides code and inputs, decides an action's output.

Read from package metadata so that no library is imported just to learn its version.
"""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata

from rlam_prefect.core.hashing import SCHEME_VERSION, canonical_json, sha256_hex

# Packages whose version can change what an action computes or how its result is stored.
FINGERPRINT_PACKAGES: tuple[str, ...] = ("numpy", "scipy", "scikit-learn", "cloudpickle")


@functools.cache
def environment(extra_packages: tuple[str, ...] = ()) -> dict[str, object]:
    packages: dict[str, str | None] = {}
    for name in sorted(set(FINGERPRINT_PACKAGES) | set(extra_packages)):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": packages,
        "hash_scheme": SCHEME_VERSION,
    }


# Packages that run the workflow without deciding what an action computes: recorded with each
# run for reviewers and exports, never part of a cache key (upgrading Prefect must not invalidate results).
RUNTIME_PACKAGES: tuple[str, ...] = ("prefect", "litellm", "pyarrow", "pydantic")


@functools.cache
def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_hash(extra_packages: tuple[str, ...] = ()) -> str:
    return "sha256:" + sha256_hex(canonical_json(environment(extra_packages)).encode())
