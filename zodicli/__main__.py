"""``python -m zodicli``: the same as the ``zodi`` command."""
from .cli import main

main()
