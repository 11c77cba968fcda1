"""Decide, purely: functions of plain data and an injected ``now``, no I/O."""
