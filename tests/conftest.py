"""Shared fixtures: a small toy city, a CLI runner that keeps stderr apart, offline hubs."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):     # `pytest -n N`: one thread per worker and per zodi it starts, as
    os.environ["OMP_NUM_THREADS"] = "1"       # OpenMP threads that outnumber the cores wait on each other


def pytest_collection_modifyitems(items):
    """The end-to-end recipe tests first: under xdist the long ones then do not finish last, alone."""
    items.sort(key=lambda item: item.module.__name__ != "test_recipes")


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    from zodicli.data.toy import make_toy

    root = tmp_path_factory.mktemp("toy")
    make_toy(root, n_train=8, n_val=4, seed=0)
    return root


@pytest.fixture
def toy_env(toy_root, monkeypatch):
    monkeypatch.setenv("ZODI_TOY_ROOT", str(toy_root))
    return toy_root


@pytest.fixture
def cli():
    """Run ``zodi ARGS`` in-process: returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from zodicli.cli import cli as group

    runner = CliRunner()

    def run(*args):
        r = runner.invoke(group, [str(a) for a in args], catch_exceptions=False)
        return r.exit_code, r.stdout, r.stderr

    return run
