"""Public fakes and helpers for testing shoal and things built on it."""

from shoal.testing.ads_client import FakeAdsClient, Received

__all__ = ["FakeAdsClient", "Received"]
