"""Fixtures shared by the tests of the shard readers.

``rust_shards`` is a folder holding ``shards/<stage>/<split>/`` sets written by the Rust render
stage: ``$WINGFLOW_SHARD_FIXTURE`` when set (a directory previously filled by the ignored Rust
test ``write_python_fixture``); otherwise the fixture runs that Rust test itself when ``cargo``
is on PATH, and skips the test when it is not.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def rust_shards(tmp_path_factory) -> Path:
    given = os.environ.get("WINGFLOW_SHARD_FIXTURE")
    if given and (Path(given) / "shards").is_dir():
        return Path(given)
    if shutil.which("cargo") is None:
        pytest.skip("no cargo and no WINGFLOW_SHARD_FIXTURE: cannot produce Rust-written shards")
    out = tmp_path_factory.mktemp("rust_shards")
    env = dict(os.environ, WINGFLOW_SHARD_FIXTURE=str(out))
    subprocess.run(
        ["cargo", "test", "-p", "render", "--lib", "write_python_fixture", "--", "--ignored"],
        cwd=REPO,
        env=env,
        check=True,
    )
    return out

