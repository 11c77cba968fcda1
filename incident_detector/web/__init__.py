"""The HTTP face of the daemon: it reads what the loop publishes, never a source itself."""
