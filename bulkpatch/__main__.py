"""``python -m bulkpatch``."""

from bulkpatch.cli.main import main

main()
