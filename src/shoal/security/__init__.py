"""Security policies, one vertical slice (ADR 0048): everything about PeerAuthentication,
RequestAuthentication and AuthorizationPolicy lives here.

* :mod:`.model` — the kinds' typed specs (Istio's ``security.istio.io`` fields);
* :mod:`.scoping` — which policies apply to a workload (root, namespace and workload
  levels) and a port's effective mTLS mode: the one rule the plugin, the evaluator and
  the checks all ask;
* the Envoy plugin — :mod:`.plugin` (what an inbound port or a gateway server gets:
  filter chains per mTLS mode, JWT, ext_authz, RBAC), built from :mod:`.authn` (mTLS
  filter chains, peer TLS), :mod:`.jwt`, :mod:`.ext_authz` (CUSTOM) and :mod:`.rbac` /
  :mod:`.rbac_match` (ALLOW / DENY / AUDIT);
* :mod:`.evaluate` and :mod:`.check` — the pure evaluator behind ``shoal authz check``;
* :mod:`.analyze` — ``shoal analyze``'s checks of these kinds.

Imports: the model needs :mod:`shoal.api`, whose kind registry imports the model, so
:mod:`shoal.api` is initialized first whichever module of the slice is imported first.
The plugin uses :mod:`shoal.xds.generate`'s helpers and the listener generators use the
plugin: they import each other's modules (``from shoal.security import plugin``), never
names from them at import time.
"""

import shoal.api  # noqa: F401  (before .model: see the module doc)
