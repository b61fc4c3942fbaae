"""The lifecycle layer: one request's lifecycle, the same for the cluster and for `forgetmi run`.

Accept and launch (:mod:`.launch`), the forget list (:mod:`.subjects`), and the conclusion once a
report exists (:mod:`.conclude`: gates, decision, promotion, receipt), reaching the outside only
through the ports of :mod:`.ports` (docs/architecture.md).
"""
