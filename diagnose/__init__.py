"""One-click diagnosis: probes over the store and the sources, ranked likely causes with evidence.

from diagnose import diagnose
result = diagnose(engine, config, now, kpi="sync_success_ratio", labels={"channel": "tmall"})
result.causes[0].cause  # a PRODUCT.md incident id, e.g. "wms_push_gap"
"""

from diagnose.engine import HealthView, diagnose, rank
from diagnose.model import CAUSES, Cause, Diagnosis, Finding

__all__ = ["CAUSES", "Cause", "Diagnosis", "Finding", "HealthView", "diagnose", "rank"]
