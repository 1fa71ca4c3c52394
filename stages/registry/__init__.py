"""The distribution-API client: auth, deadlines, retries, manifests and blobs. It knows none of its users."""
