"""``rlam export``: hand a run to others in a standard vocabulary (W3C PROV, RO-Crate, OpenLineage).

Each exporter imports its library only when asked for, and every export is written beside its
final name first and moved into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rlam_prefect.core.errors import UsageError
from rlam_prefect.record.store import TraceStore

FORMATS: dict[str, str] = {"prov": ".prov.json", "ro-crate": "-ro-crate", "openlineage": ".openlineage.jsonl"}


def default_path(run_id: str, fmt: str) -> Path:
    return Path(f"{run_id}{FORMATS[fmt]}")


def export_run(store: TraceStore, run_id: str, fmt: str, out: Path | None = None) -> Path:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    from rlam_prefect.record.exports.record import load_run_record

    record = load_run_record(store, run_id)
    target = (out or default_path(run_id, fmt)).resolve()
    if target.exists():
        raise UsageError(f"{target} already exists; remove it or choose another --out")
    if not target.parent.is_dir():
        raise UsageError(f"directory {target.parent} does not exist")
    staging = target.with_name(f".{target.stem}.partial{target.suffix}")  # keeps .zip last for the crate writer
    _remove(staging)
    try:
        if fmt == "prov":
            from rlam_prefect.record.exports.to_prov import build_prov

            build_prov(record).serialize(str(staging), format="json", indent=2)
        elif fmt == "openlineage":
            from rlam_prefect.record.exports.to_openlineage import build_events, write_events

            write_events(build_events(record), staging)
        else:
            from rlam_prefect.record.exports.to_rocrate import write_crate

            write_crate(record, staging)
        if staging.is_file():
            staging.chmod(0o644)  # a hand-over file: readable like any other the user writes
        os.replace(staging, target)
    finally:
        _remove(staging)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
