"""Keys, rate limits and erasure on a real three-node Redis Cluster.

The authenticate script touches one key's record and bucket (one hash tag per key);
the erasure script touches one recipient partition; finding a recipient's
idempotency keys and messages scans every primary.
"""

from __future__ import annotations

import pytest

from . import cluster_support
from . import test_security_store as base

pytestmark = pytest.mark.xdist_group("cluster")

CASES = [
    base.test_keys_create_list_revoke,
    base.test_unknown_wrong_and_malformed_keys,
    base.test_bootstrap_install_never_revives_a_revoked_key,
    base.test_rate_limit_token_bucket,
    base.test_erasure_removes_everything_but_keeps_the_suppression,
    base.test_erasure_of_someone_never_opted_out_keeps_no_suppression,
    base.test_tombstone_names_do_not_depend_on_the_process,
]


test_security_case_on_cluster = cluster_support.cases_on_cluster(CASES)
