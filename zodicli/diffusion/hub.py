"""Hugging Face Hub model ids (``stable-diffusion-v1-5/stable-diffusion-v1-5``) resolved as diffusers
resolves them: from the user's cache first, downloaded when online (``HF_HUB_OFFLINE=1`` forbids
that), at ``--revision`` or the default branch. The snapshot folder is then loaded like any local
folder, and its commit hash is recorded in the artifact's provenance."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What zodi loads: safetensors weights and configs of the pipeline parts (or of one model), not the
# fp16/EMA variants, .ckpt single files or other frameworks' weights that SD repositories also hold.
PIPELINE = ["model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]
SINGLE = ["config.json", "*.safetensors", "*.bin"]
SKIP = ["*.fp16.*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5", "*.ot", "*.pb"]


def looks_like_repo_id(spec: str) -> bool:
    return bool(REPO_ID.fullmatch(spec)) and not Path(spec).exists()


def hint(repo: str, local_dir: str | None = None) -> str:
    where = f" --local-dir {local_dir}" if local_dir else ""
    return (f"run 'hf download {repo}{where}' on a machine with network access (then copy the folder or the "
            f"cache here), or unset HF_HUB_OFFLINE to let zodi download it")


def snapshot(repo: str, revision: str | None = None, pipeline: bool = True, local_dir: str | None = None,
             local_only: bool = False) -> Path | None:
    """The local snapshot folder of ``repo`` (cache first; a download when online). ``local_only``:
    the cache alone, None when the repository is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    patterns = PIPELINE if pipeline else SINGLE
    # read at each call (huggingface_hub reads them once, at import)
    kw = {"cache_dir": os.environ.get("HF_HUB_CACHE") or None,
          "local_files_only": local_only or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")}
    if local_only:
        try:
            return Path(snapshot_download(repo, revision=revision, **kw))
        except (LocalEntryNotFoundError, HfHubHTTPError):
            return None
    try:
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns,
                                      ignore_patterns=SKIP + (["*.bin"] if pipeline else []), **kw))
        if pipeline and not any(path.glob("unet/*.safetensors")):       # an older repository: .bin weights only
            path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, ignore_patterns=SKIP, **kw))
        return path
    except LocalEntryNotFoundError:
        raise InputError(f"{repo}{'@' + revision if revision else ''} is not in the Hugging Face cache and downloads "
                         "are off (HF_HUB_OFFLINE=1, or no network)", hint(repo, local_dir)) from None
    except RevisionNotFoundError:
        raise InputError(f"{repo} has no revision {revision!r}", "pass a branch, tag or commit of that repository") from None
    except GatedRepoError:
        raise InputError(f"{repo} is gated: accept its licence on the Hub", "then log in with 'hf auth login'") from None
    except RepositoryNotFoundError:
        raise InputError(f"{repo} is neither a local path nor a Hugging Face repository",
                         "check the spelling, or pass a local folder or .safetensors file") from None
    except HfHubHTTPError as e:
        raise InputError(f"the Hugging Face Hub refused {repo} ({e.__class__.__name__})", hint(repo, local_dir)) from None


def commit_of(path: Path) -> str | None:
    """The commit hash of a cache snapshot folder (``.../snapshots/<commit>``), else None."""
    path = Path(path)
    return path.name if path.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", path.name) else None
