"""Helpers every job shares: config, lake paths, names, the command line and the Spark session."""
