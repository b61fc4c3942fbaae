"""The local layer: the ``forgetmi`` command — ``validate`` (the CRD's schema and CEL rules as the API
server applies them), ``run`` (one request's lifecycle on this machine, a local trainer process in
place of a Job) and ``demo`` (docs/architecture.md). It never imports the cluster layer."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
