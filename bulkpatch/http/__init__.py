"""HTTP: the transport (the one module that imports aiohttp's client), auth, redaction, workers."""
