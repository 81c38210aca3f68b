"""The table recipe runs end to end (toy city, tiny stack, one domain and seed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_zodi_table_recipe_on_the_toy_city(tmp_path):
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(["make", "-s", "-f", "recipes/zodi/table.mk", "toy", f"OUT={tmp_path}/t", "TOY_DOMAINS=fog",
                        "TOY_SEEDS=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-2].split() == ["domain", "zodi", "published"] and lines[-1].startswith("fog ")
    assert (tmp_path / "t-toy/fog-seed1/target.json").is_file() and (tmp_path / "t-toy/syn-fog.h5").is_file()
