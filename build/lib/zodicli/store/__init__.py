"""HDF5 artifacts: one file per command output, crash-safe, resumable, shardable."""
from .artifact import Artifact, ArtifactWriter, open_artifact  # noqa: F401
