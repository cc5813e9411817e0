"""The control-plane process: wiring of components and the REST API."""
