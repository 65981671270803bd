"""The run: intake, sending with retries, pacing, flow policy, outage gate, key order, stopping."""
