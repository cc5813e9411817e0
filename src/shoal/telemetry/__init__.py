"""Telemetry: metrics from the sidecars, access logs, traces, topology and SLOs."""
