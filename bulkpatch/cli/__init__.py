"""The ``bulkpatch`` command: the only package that imports click, rich and the terminal."""
