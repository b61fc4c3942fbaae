"""The API layer: the UnlearnRequest's types, conditions and names, the operator's errors and settings.

Nothing here does I/O or imports another layer of the operator (docs/architecture.md).
"""
