"""The defaults that both the command line and the library use, in a module that is cheap to import.

``bulkpatch --help`` shows them without importing the engine (pydantic, aiohttp).
"""

#: the Workload Management API v5 endpoint for one workload
DEFAULT_PATH = "/api/workload_management/v5/workloads/{workload_id}"
