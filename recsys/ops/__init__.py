"""Operator tooling: the command-line front door (bin/recsys) and what an operator runs by hand."""
