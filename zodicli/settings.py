"""Settings: YAML file + command line -> one resolved dict, hashed for provenance.

Every command option can also come from ``--config FILE`` (YAML, keys spelled like the options,
dashes or underscores); the command line wins. Options that only change *how* work is done (batch
size, shard, device, output handling) are recorded but left out of the hash, so a resumed run
with another batch size or on another shard still matches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import InputError

# Recorded in every artifact, but not part of its identity.
RUNTIME_KEYS = frozenset({
    "config", "shard", "overwrite", "allow_partial", "json_output", "batch_size",
    "num_workers", "device", "quiet", "out", "data_root", "report_dir", "preview", "deterministic", "max_size",
})


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def identity(settings: dict) -> dict:
    """The part of the settings that determines the output's content."""
    return {k: v for k, v in settings.items() if k not in RUNTIME_KEYS}


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(canonical_json(identity(settings)).encode()).hexdigest()[:16]


def yaml_fingerprint(path: str | Path) -> str:
    """A YAML settings file's values, hashed (16 hex digits): its comments and layout do not count."""
    import yaml

    return hashlib.sha256(canonical_json(yaml.safe_load(Path(path).read_text())).encode()).hexdigest()[:16]


def diff_settings(old: dict, new: dict) -> list[str]:
    """Human-readable differences of the identity parts, e.g. ``strength: 0.6 -> 0.7``."""
    a, b = identity(old), identity(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if canonical_json(a.get(k)) != canonical_json(b.get(k)):
            out.append(f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}")
    return out


def load_config(path: str | Path, allowed: set[str], command: str, sections: set[str] = frozenset()) -> dict:
    """Read a YAML settings file for ``command``; unknown keys are an error. A file may hold one
    section per command (``{evaluate: {...}, train-seg: {...}}``; ``sections`` names the commands)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist", "pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise InputError(f"config file {p} is not UTF-8 text (byte {e.start})", "save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"config file {p} is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {p} must hold a mapping of option: value", "see README 'Settings'")
    spellings = {command, command.replace("-", "_")}
    found = [k for k in data if str(k) in spellings and isinstance(data[k], dict)]
    if found:
        data = data[found[0]]
    else:
        present = sorted(str(k) for k, v in data.items() if isinstance(v, dict) and str(k).replace("_", "-") in sections)
        if present:
            raise InputError(f"config file {p} has sections for {', '.join(present)} but none for '{command}'",
                             f"add a '{command}:' section, or pass a file for this command")
    norm = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(norm) - allowed)
    if unknown:
        raise InputError(
            f"config file {p} sets unknown option(s) for '{command}': {', '.join(unknown)}",
            f"valid: {', '.join(sorted(allowed))}",
        )
    return norm
