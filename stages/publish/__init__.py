"""A `Build` to a destination: the output directory, the report, the Docker engine, a registry."""
