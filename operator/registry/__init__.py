"""The registry layer: the model registry in object storage (versions, aliases, manifests) and each
request's artifacts in it (docs/architecture.md)."""
