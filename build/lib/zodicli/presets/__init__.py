"""Named model presets (``models.yaml``) and ZoDi's domain presets (``domains.yaml``), shipped inside
the package so that an installed wheel has them; ``importlib.resources`` reads them."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text) or {}


def models() -> dict:
    """Model presets; ``$ZODI_PRESETS`` may name a YAML file of one's own instead."""
    own = os.environ.get("ZODI_PRESETS")
    if own:
        return _yaml(Path(own).read_text(encoding="utf-8")) if Path(own).is_file() else {}
    return _yaml(resources.files(__name__).joinpath("models.yaml").read_text(encoding="utf-8"))


def domains() -> dict:
    return _yaml(resources.files(__name__).joinpath("domains.yaml").read_text(encoding="utf-8"))
