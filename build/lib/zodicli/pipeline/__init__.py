"""Pipeline steps: read items, do the work, write artifacts (the core below the commands)."""
