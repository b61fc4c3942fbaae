"""The cluster layer: the Kubernetes API client, the Job builders, what a Job is doing, when to look
at a request, and the plain async functions Kopf's handlers call (docs/architecture.md)."""
