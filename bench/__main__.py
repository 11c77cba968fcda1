"""`python -m bench`: every benchmark, one after the other, with its figures."""

import sys

from . import detection, footprint, mass_rollout

print("== Detection quality over the scenario suite (bench/detection.py)")
detection.main([])
print()
print("== Footprint of a real process watching many Deployments (bench/footprint.py)")
footprint.main([])
print()
print("== A mass rollout: 500 Deployments rolling at once, one bad (bench/mass_rollout.py)")
mass_rollout.main([])
sys.exit(0)
