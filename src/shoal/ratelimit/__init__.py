"""Rate limits and quotas, one vertical slice (ADR 0048): the RateLimitPolicy kind's model
(:mod:`.model`), the Envoy plugin of inbound HTTP ports and the service's cluster
(:mod:`.plugin`), the rules both the plugin and the rate-limit service derive from a
policy (:mod:`.rules`), and the service itself (:mod:`.service`, :mod:`.server`, its
backends and identity). docs/ratelimit.md is the guide.

Imports: :mod:`shoal.api`'s kind registry imports the model, so :mod:`shoal.api` is
initialized first whichever module of the slice is imported first; the plugin and
:mod:`shoal.xds.generate` use each other's modules, never names at import time
(the generator list is put together on first use: ``xds.generate.generators``).
"""

import shoal.api  # noqa: F401  (before .model: see the module doc)
