"""``shoal analyze``: config that validates but cannot work (Istio's ``istioctl analyze``)."""

from shoal.analyze.checks import Finding, analyze

__all__ = ["Finding", "analyze"]
