"""ForgetMI Operator: Kopf operator for UnlearnRequest resources (never imports torch)."""

__version__ = "0.1.0"

GROUP = "unlearning.forgetmi.io"
VERSION = "v1alpha1"
PLURAL = "unlearnrequests"
KIND = "UnlearnRequest"
