"""Authorization: which policies apply, and a pure evaluator behind `shoal authz check`."""
