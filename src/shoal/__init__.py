"""shoal: a service mesh with a Python control plane and Envoy sidecars."""

__version__ = "0.1.0"
