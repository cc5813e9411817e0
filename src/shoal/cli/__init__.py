"""The `shoal` command line: one module per verb (group)."""
