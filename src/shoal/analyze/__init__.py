"""``shoal analyze``: config that validates but cannot work (Istio's ``istioctl analyze``)."""

from shoal.analyze.checks import analyze
from shoal.analyze.finding import Finding

__all__ = ["Finding", "analyze"]
