"""A run's parts and its folder: building, the checkpointed session, the lock, event logs, summary, watch ledger."""
