"""fer_ray: facial emotion recognition (FER2013, 7 classes) from a laptop to a Ray cluster."""

import os

# Ray reports usage statistics to the internet unless told not to. Nothing leaves the
# machine unasked: users opt in by exporting RAY_USAGE_STATS_ENABLED=1 themselves.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"
