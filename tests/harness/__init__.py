"""Test harness: the emulated Kubernetes API server, the Job runner and selector parsing."""
