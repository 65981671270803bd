"""A local stand-in for the Workload Management API v5: ``bulkpatch mock`` and the demo's server."""

from bulkpatch.mock.app import MockApi, MockConfig, MockServer
from bulkpatch.mock.store import WorkloadStore, sample_workloads

__all__ = ["MockApi", "MockConfig", "MockServer", "WorkloadStore", "sample_workloads"]
