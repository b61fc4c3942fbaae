"""``python -m forgetmi_operator [kopf run options]``: run the operator (``kopf run`` of the handlers).

The options are Kopf's own and pass through unchanged, e.g. ``--all-namespaces``,
``--namespace=X`` (repeatable), ``--standalone``, ``--peering=NAME``,
``--liveness=http://0.0.0.0:8081/healthz``, ``--verbose``. The handlers module is always the
one run; ``--help`` shows Kopf's help. Logs are JSON when ``FORGETMI_LOG_FORMAT=json`` (the
chart's default) and plain lines with ``text``.
"""

from __future__ import annotations

import sys

HANDLERS_MODULE = "forgetmi_operator.handlers"


def kopf_args(argv: list[str], log_format: str | None = None) -> list[str]:
    """The ``kopf`` command line for ``argv`` (a leading ``run`` is accepted and dropped).
    ``log_format`` (``FORGETMI_LOG_FORMAT``: json or text) becomes Kopf's ``--log-format`` unless
    the command line sets one."""
    rest = argv[1:] if argv[:1] == ["run"] else argv
    if log_format and not any(a == "--log-format" or a.startswith("--log-format=") for a in rest):
        rest = [f"--log-format={'json' if log_format == 'json' else 'plain'}", *rest]
    return ["run", *rest, "-m", HANDLERS_MODULE]


def main(argv: list[str] | None = None) -> None:
    from kopf import cli

    from forgetmi_operator.api.settings import load_settings

    args = kopf_args(sys.argv[1:] if argv is None else argv, load_settings().log_format)
    cli.main(args=args, prog_name="forgetmi-operator")


if __name__ == "__main__":
    main()
