"""Facts about references and images, no building: the reference grammar, pin scanning and
rewriting, the registry client, the lock, the SBOM, the audit (with SARIF) and signatures."""
