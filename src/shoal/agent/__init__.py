"""The per-workload agent: bootstrap, start and supervise the sidecar Envoy and the app."""

from shoal.agent.agent import Agent, bootstrap_for
from shoal.agent.config import AgentConfig, Plan, UpstreamSpec, app_env, make_plan

__all__ = ["Agent", "AgentConfig", "Plan", "UpstreamSpec", "app_env", "bootstrap_for", "make_plan"]
