"""A request's storage identity in the cluster: the S3 credentials of its own namespace and the
reach its namespace's policy allows — never the operator's own identity.

The credentials are a Secret in the request's namespace with the keys ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and optionally ``AWS_SESSION_TOKEN`` (the same Secret its Jobs get as
environment): the one ``spec.credentialsSecretRef`` names, else the namespace's in the chart value
``tenants`` (``FORGETMI_NAMESPACE_POLICIES``), else ``s3.credentialsSecret``
(``FORGETMI_CREDENTIALS_SECRET``). In the cluster ``file://`` URIs are refused (the operator's
filesystem is no request's to name), and a namespace with ``allowedUriPrefixes`` reaches only URIs
below them. A request that names ``s3://`` objects while no credentials are configured for it is
refused: there is no fallback to the operator's identity.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api.errors import CredentialsMissing, SecretNotFound
from forgetmi_operator.api.naming import describe
from forgetmi_operator.api.settings import NamespacePolicy, Settings
from forgetmi_operator.lifecycle.ports import SecretStore
from forgetmi_trainer.storage import Objects, S3Credentials, S3Settings

ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"
URI_FIELDS = (("model", "registryUri"), ("data", "manifestUri"), ("forget", "subjectsUri"))


def credentials_secret(body: Mapping[str, Any], settings: Settings) -> str:
    """The name of the Secret (in the request's namespace) with the request's S3 keys; "" when none is configured."""
    ref = ((body.get("spec") or {}).get("credentialsSecretRef") or {}).get("name")
    policy = settings.namespace_policies.get(str(body["metadata"]["namespace"]), NamespacePolicy())
    return str(ref or policy.credentials_secret or settings.credentials_secret)


def _names_s3(body: Mapping[str, Any]) -> bool:
    spec = body.get("spec") or {}
    return any(str((spec.get(group) or {}).get(key) or "").startswith("s3://") for group, key in URI_FIELDS)


def _decoded(secret: Mapping[str, Any], key: str) -> str | None:
    encoded = (secret.get("data") or {}).get(key)
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return None


def s3_settings(settings: Settings, credentials: S3Credentials) -> S3Settings:
    """The S3 client settings of a request's storage handle: its credentials, the operator's retries."""
    return S3Settings(credentials=credentials, retry_mode=settings.s3_retry_mode,
                      max_attempts=settings.s3_max_attempts, retry_quota=settings.s3_retry_quota)


async def storage_for(store: SecretStore, settings: Settings, body: Mapping[str, Any]) -> Objects:
    """The request's storage handle (see the module docstring); raises CredentialsMissing or
    SecretNotFound naming what is missing. Secret values are never put in a message."""
    namespace = str(body["metadata"]["namespace"])
    policy = settings.namespace_policies.get(namespace, NamespacePolicy())
    reach: dict[str, Any] = {"endpoint_url": settings.s3_endpoint_url or None, "allow_files": False,
                             "prefixes": policy.allowed_uri_prefixes}
    name = credentials_secret(body, settings)
    if not name:
        if _names_s3(body):
            raise CredentialsMissing(
                f"{describe(body)} names s3:// objects, but no S3 credentials are configured for namespace "
                f"{namespace}: set spec.credentialsSecretRef, or the chart value tenants.{namespace}.credentialsSecret "
                "or s3.credentialsSecret. The operator never reads a request's objects with its own identity.")
        return Objects(**reach, settings=s3_settings(settings, S3Credentials("", "")))
    secret = await store.get_secret(namespace, name)
    if secret is None:
        raise SecretNotFound(f"Secret {namespace}/{name}, the S3 credentials of {describe(body)}, does not exist.")
    access, key, token = (_decoded(secret, item) for item in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN))
    if not access or not key:
        missing = " and ".join(item for item, value in ((ACCESS_KEY, access), (SECRET_KEY, key)) if not value)
        raise SecretNotFound(f"Secret {namespace}/{name}, the S3 credentials of {describe(body)}, has no {missing}.")
    return Objects(**reach, settings=s3_settings(settings, S3Credentials(access, key, token or None)))
