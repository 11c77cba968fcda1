"""Change the world, carefully: every write guarded by the state it was decided on."""
