"""Is a registered workload ready to take connections?"""

from __future__ import annotations

from shoal.api.meta import Resource

# "false": registered, but its sidecar cannot take connections yet (an agent says so until
# its inbound listener is active): it is nobody's endpoint until then (like a Kubernetes
# pod that is not Ready). Its own proxy still gets its inbound config.
READY_ANNOTATION = "shoal.io/ready"


def is_ready(workload: Resource) -> bool:
    return workload.metadata.annotations.get(READY_ANNOTATION) != "false"
