"""The web dashboard served by the control plane at /ui/ (static files, no build step)."""
