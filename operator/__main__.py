"""``python -m forgetmi_operator [kopf run options]``: run the operator (``kopf run`` of the handlers).

The options are Kopf's own and pass through unchanged, e.g. ``--all-namespaces``,
``--namespace=X`` (repeatable), ``--standalone``, ``--peering=NAME``,
``--liveness=http://0.0.0.0:8081/healthz``, ``--verbose``. The handlers module is always the
one run; ``--help`` shows Kopf's help.
"""

from __future__ import annotations

import sys

HANDLERS_MODULE = "forgetmi_operator.handlers"


def kopf_args(argv: list[str]) -> list[str]:
    """The ``kopf`` command line for ``argv`` (a leading ``run`` is accepted and dropped)."""
    rest = argv[1:] if argv[:1] == ["run"] else argv
    return ["run", *rest, "-m", HANDLERS_MODULE]


def main(argv: list[str] | None = None) -> None:
    from kopf import cli

    cli.main(args=kopf_args(sys.argv[1:] if argv is None else argv), prog_name="forgetmi-operator")


if __name__ == "__main__":
    main()
