"""The loop and its memory: the tick, per-source health, the outbox, the store, leadership."""
