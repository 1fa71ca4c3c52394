"""The image model, and the formats any image is read from and written to (OCI layout, docker archive, engine, registry)."""
