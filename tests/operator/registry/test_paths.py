"""registry.paths: where a request's artifacts and a model's versions and aliases live."""

from __future__ import annotations

from forgetmi_operator.registry import paths


def test_request_paths_keep_the_receipt_at_the_top() -> None:
    found = paths.request_paths("file:///reg", "m", "u", kind="retrain")
    assert found.directory == "file:///reg/m/requests/u"
    assert found.report == "file:///reg/m/requests/u/retrain/report.json"
    assert found.receipt == "file:///reg/m/requests/u/receipt.json"


def test_versions_aliases_and_requests_each_have_their_folder() -> None:
    assert paths.version_uri("s3://models/reg", "cxr", "v7") == "s3://models/reg/cxr/versions/v7"
    assert paths.alias_uri("s3://models/reg", "cxr", "production") == "s3://models/reg/cxr/aliases/production.json"
    assert paths.request_dir_uri("file:///reg", "cxr", "u-1") == "file:///reg/cxr/requests/u-1"
    unlearn = paths.request_paths("file:///reg", "cxr", "u-1")
    assert (unlearn.report, unlearn.progress) == ("file:///reg/cxr/requests/u-1/report.json",
                                                  "file:///reg/cxr/requests/u-1/progress.json")
    assert paths.alias_uri("s3://bkt/r/", "cxr", "production") == "s3://bkt/r/cxr/aliases/production.json"
