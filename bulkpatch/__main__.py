"""``python -m bulkpatch``."""

from bulkpatch.cli import main

main()
