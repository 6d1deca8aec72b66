"""A fit on a multi-host deployment: scheduler and workers in their own network
namespaces with a user-space delay (``benchmarks/deploy.py`` ``netns_cluster``);
needs root and ``ip``, skipped otherwise.  No timing assertions: the delay is
checked by what is installed, not by how long calls take."""

import ipaddress
import subprocess

import pytest

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification
from tests.integration.deployments import deploy, nothing_left

pytestmark = [pytest.mark.skipif(deploy.netns_unavailable() is not None,
                                 reason=str(deploy.netns_unavailable())),
              pytest.mark.slow]  # network namespaces, a bridge and a delayed cluster


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_fit_on_netns_cluster_and_teardown():
    nd = deploy.netdelay()
    with deploy.netns_cluster(n_workers=2, rtt_ms=1.0) as cluster:
        names = set(cluster.namespaces.values())
        assert names <= {line.split()[0] for line in _ip("netns", "list").splitlines()}
        subnet = ipaddress.ip_network(cluster.subnet)
        for address in [cluster.address, *cluster.worker_pids()]:
            host = address.split("://")[1].rsplit(":", 1)[0]
            assert ipaddress.ip_address(host) in subnet
        assert nd.current() == pytest.approx(0.5e-3)  # this process: rtt_ms / 2
        # the delay holds up the fit's exchange channel too (its links write on the
        # socket themselves): its round trip between two hosts takes 1 ms or more
        assert deploy.measure_rtts(cluster.client, n=5)["worker_channel"] >= 0.9
        X, y = make_sparse_classification(2000, 400, nnz_per_row=10, random_state=1)
        with cluster.client.as_current():
            clf = AsyncSGDClassifier(loss="log_loss", max_iter=2, tol=None, random_state=0,
                                     timeout=60).fit(X, y)
        assert clf.n_iter_ == 2
        assert nothing_left(cluster.client)
        run_id, bridge = cluster.run_id, cluster.bridge
    assert nd.current() == 0.0
    assert not names & {line.split()[0] for line in _ip("netns", "list").splitlines() if line}
    assert run_id not in _ip("-o", "link", "show") and bridge not in _ip("-o", "link", "show")
    assert not (deploy.STATE_DIR / f"{run_id}.json").exists()
