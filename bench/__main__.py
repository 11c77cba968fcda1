"""`python -m bench`: every benchmark, one after the other, with its figures."""

import sys

from . import detection, footprint

print("== Detection quality over the scenario suite (bench/detection.py)")
detection.main([])
print()
print("== Footprint of a real process watching many Deployments (bench/footprint.py)")
footprint.main([])
sys.exit(0)
