"""The ingress gateway workload: an Envoy without an application (``shoal gateway run``)."""

from shoal.gateway.agent import GatewayAgent, GatewayConfig

__all__ = ["GatewayAgent", "GatewayConfig"]
