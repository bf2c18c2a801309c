"""The Prefect cache policy of every action task: a content-addressed key, nothing run-specific."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy

from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.environment import environment_hash
from rlam_prefect.core.keys import cache_key


@dataclass
class ActionCachePolicy(CachePolicy):
    """Key = action + code version + validated params + input artifact hashes + environment (+ data file digests).

    Inputs arrive as ``Artifact`` objects that carry the hash computed when they were produced
    (and re-verified when they were loaded), so no input is hashed twice. The ``step``,
    ``expect_cached`` and ``inject_failure`` task arguments are bookkeeping and stay out of the key.
    """

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        if inputs.get("inject_failure"):
            return None  # no key: Prefect runs the task (which fails on purpose) instead of serving a cached result
        spec = get_action(task_ctx.task.name)
        input_hashes = {name: artifact.content_hash for name, artifact in inputs["inputs"].items()}
        files = {name: found.digest for name, found in spec.file_digests(inputs["params"]).items()}  # the stat cache: not hashed again
        return cache_key(spec.name, spec.code_version, inputs["params"], input_hashes, environment_hash(spec.packages), files)
