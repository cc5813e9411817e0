"""The control plane's default ports. A module with no imports, so that the CLI's client
can name the default URL without importing the config model (shoal.control.config
imports shoal.api and the registry)."""

DEFAULT_API_PORT = 15080
DEFAULT_XDS_PORT = 15010
DEFAULT_AGENT_API_PORT = 15443  # TLS REST listener for agents
DEFAULT_SECURE_XDS_PORT = 15012  # xDS over TLS
