"""`python -m bench`: every benchmark, one after the other, with its figures."""

import sys

from . import (changes, dashboard, detection, fast_lane, footprint, mass_rollout, service_map,
               store)

print("== Detection quality over the scenario suite (bench/detection.py)")
detection.main([])
print()
print("== The fast lane: detection delay at the default poll, and its Loki queries (bench/fast_lane.py)")
fast_lane.main([])
print()
print("== Footprint of a real process watching many Deployments (bench/footprint.py)")
footprint.main([])
print()
print("== A mass rollout: 500 Deployments rolling at once, one bad (bench/mass_rollout.py)")
mass_rollout.main([])
print()
print("== The dashboard's overview with 500 Deployments and 1,000 incidents (bench/dashboard.py)")
dashboard.main([])
print()
print("== The change timeline's watches: 500 Deployments, 1,000 ConfigMaps (bench/changes.py)")
changes.main([])
print()
print("== The service map: 500 workloads, 2,000 links (bench/service_map.py)")
service_map.main([])
print()
print("== The store on SQLite and PostgreSQL: operations, tick cost, memory (bench/store.py)")
store.main([])
sys.exit(0)
