"""Job lifecycle: queued states, claims and leases, the retry schedule, pacing, batched Redis calls."""
