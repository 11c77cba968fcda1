"""Simulation: recorded scenarios, a simulated world, and loopback servers that speak the real
Kubernetes, Loki and Slack wire formats. Used by ``make demo``, ``replay`` and the tests; the
detector itself talks to them exactly as it talks to a cluster."""
