"""Outcomes out: the ledger, resume, the sync state, reports, the run's results and tally."""
