"""Data files are content (no Prefect server): streamed digests, the stat cache, file inputs, the key, the policy rule."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

import rlam_prefect as rlam
from rlam_prefect.actions.files import check_files_unchanged, declared_files, file_params
from rlam_prefect.core import files
from rlam_prefect.core.keys import cache_key
from rlam_prefect.planning.policy import Policy, file_choice_violation


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_digest_is_the_sha256_of_the_bytes_as_sha256sum_prints_it(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * files.BLOCK + 17))  # several blocks and a partial one
    found = files.file_digest(path)
    assert found.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert found.size == path.stat().st_size and found.path == str(path)
    if shutil.which("sha256sum"):
        assert found.digest == "sha256:" + subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def test_a_file_is_hashed_once_while_unchanged_and_again_after_an_in_place_edit_of_the_same_size(tmp_path):
    files.clear_stat_cache()
    path = _write(tmp_path / "d.csv", "a,y\n1,cat\n2,dog\n")
    before = files.hash_count
    first = files.file_digest(path)
    assert files.file_digest(path) == first and files.file_digest(str(path)) == first
    assert files.hash_count == before + 1  # served from the stat cache the second and third time
    st = path.stat()
    with open(path, "r+b") as handle:  # same size, labels flipped, and the mtime put back as it was
        handle.write(b"a,y\n1,dog\n2,cat\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = files.file_digest(path)
    assert second.digest != first.digest  # the change time moved: the stat cache does not trust the old digest
    assert files.hash_count == before + 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.csv", "does not exist"),
        (lambda d: _write(d / "empty.csv", ""), "is empty"),
        (lambda d: d, "is not a regular file"),
        (lambda d: _write(d / "file", "x") / "below-a-file.csv", "cannot be read"),
    ],
)
def test_a_missing_empty_or_unreadable_file_is_one_line_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(rlam.DataFileError) as info:
        files.file_digest(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_fsspec_urls_are_hashed_from_their_bytes_too():
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/rlam-data-test/table.csv", "wb") as handle:
        handle.write(b"a,y\n1,cat\n")
    found = files.file_digest("memory://rlam-data-test/table.csv")
    assert found.digest == "sha256:" + hashlib.sha256(b"a,y\n1,cat\n").hexdigest() and found.size == 10
    with pytest.raises(rlam.DataFileError, match="does not exist"):
        files.file_digest("memory://rlam-data-test/nothing.csv")


class _Params(BaseModel):
    path: rlam.DataFile
    labels: rlam.DataFile | None = None
    name: str = "x"


def test_any_params_field_typed_datafile_is_a_file_input_and_its_digest_enters_the_key(tmp_path):
    assert file_params(_Params) == ("path", "labels")
    assert declared_files(_Params, {"path": "a.csv", "labels": None, "name": "x"}) == {"path": "a.csv"}
    base = cache_key("load", "sha256:c", {"path": "a.csv"}, {}, "sha256:e")
    assert cache_key("load", "sha256:c", {"path": "a.csv"}, {}, "sha256:e", {}) == base  # no files: the key of before
    one = cache_key("load", "sha256:c", {"path": "a.csv"}, {}, "sha256:e", {"path": "sha256:1"})
    two = cache_key("load", "sha256:c", {"path": "a.csv"}, {}, "sha256:e", {"path": "sha256:2"})
    assert len({base, one, two}) == 3


def test_a_replayed_step_whose_file_changed_fails_naming_the_file_and_both_digests(tmp_path):
    path = _write(tmp_path / "d.csv", "a,y\n1,cat\n")
    now = {"path": files.file_digest(path)}
    recorded = {"run_id": "abc123", "files_read": json.dumps({"path": {"path": str(path), "size": 10, "digest": "sha256:old"}})}
    with pytest.raises(rlam.ReplayMismatchError) as info:
        check_files_unchanged(now, recorded, "step 1 load_dataset")
    text = str(info.value)
    assert str(path) in text and "sha256:old" in text and now["path"].digest in text and "abc123" in text


def test_the_planner_may_choose_a_data_file_only_under_the_policys_file_roots(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    given = {"path": {str(tmp_path / "mine.csv")}}
    assert file_choice_violation(None, "load", {"path": str(tmp_path / "mine.csv")}, given) is None  # the user's own choice
    refused = file_choice_violation(None, "load", {"path": "/etc/passwd"}, given)
    assert refused is not None and refused.startswith("file_roots:") and "load.path='/etc/passwd'" in refused
    policy = Policy(file_roots=(str(allowed.resolve()), "s3://bucket/data/"))
    assert file_choice_violation(policy, "load", {"path": str(allowed / "x.csv")}, given) is None
    assert file_choice_violation(policy, "load", {"path": "s3://bucket/data/x.parquet"}, given) is None
    for outside in (str(allowed / ".." / "secret.csv"), "s3://bucket/other/x.csv", "s3://bucket/data/../x.csv", "/etc/passwd"):
        assert file_choice_violation(policy, "load", {"path": outside}, given) is not None, outside


def test_file_roots_is_a_policy_rule_and_absent_from_the_canonical_form_when_unused():
    import tasks  # noqa: F401  - the seed's actions: a policy names known actions
    assert "file_roots" not in Policy.from_mapping({}).to_dict()
    policy = Policy.from_mapping({"file_roots": ["s3://bucket/data"]})
    assert policy.file_roots == ("s3://bucket/data/",)
    with pytest.raises(rlam.UsageError, match="file_roots must be a list"):
        Policy.from_mapping({"file_roots": [3]})


def test_load_dataset_reads_parquet_and_fsspec_urls_with_chosen_columns_and_dtype(tmp_path):
    import fsspec
    import numpy as np
    import pandas as pd

    import tasks  # noqa: F401
    from rlam_prefect.actions.registry import get_action

    frame = pd.DataFrame({"a": [1, 2, 3, 4], "b": [0.5, 1.5, 2.5, 3.5], "note": ["x", "y", "z", "w"], "label": ["p", "q", "p", "q"]})
    frame.to_parquet(tmp_path / "t.parquet")
    with fsspec.open("memory://rlam-data-test/t.csv", "w") as handle:
        frame.to_csv(handle, index=False)
    spec = get_action("load_dataset")
    for path in (str(tmp_path / "t.parquet"), "memory://rlam-data-test/t.csv"):
        params = spec.validate_params({"path": path, "target": "label", "columns": ["b", "a"], "dtype": "float32"})
        data = spec.run({}, params)
        assert data.feature_names == ("b", "a") and data.X.dtype == np.float32 and data.X.shape == (4, 2)
        assert data.target_names == ("p", "q") and data.y.tolist() == [0, 1, 0, 1] and data.name.startswith("t.")
    assert spec.file_params == ("path",)
    with pytest.raises(rlam.InvalidParamsError, match="path needs target"):
        spec.validate_params({"path": "x.csv"})
    with pytest.raises(rlam.InvalidParamsError, match="apply to a file only"):
        spec.validate_params({"target": "label"})
    with pytest.raises(rlam.DataFileError, match="is not a readable parquet file"):
        (tmp_path / "bad.parquet").write_text("not parquet")
        spec.run({}, spec.validate_params({"path": str(tmp_path / "bad.parquet"), "target": "label"}))
