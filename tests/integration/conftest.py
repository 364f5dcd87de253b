"""Fixtures for the integration suite (see README.md in this directory).

    pg                  session: throwaway PostgreSQL 15 cluster (harness.PgCluster)
    pgwardend_bin       session: path of the daemon under test ($PGWARDEND)
    relay_factory       start_relay(upstream=..., workers=2, extra_args=[], config_text=None)
    relay               relay_factory() with defaults
    byte_relay_factory  start_byte_relay(target=(host, port), chunk=1)
    target              parametrized: "direct", "pgwarden", "pgwarden-bytewise"

A test that takes `target` runs once per kind. Markers narrow or tune that:
    @pytest.mark.targets("direct", "pgwarden")           only these kinds
    @pytest.mark.relay_args("--max-connections", "1100") extra flags for the target's relay

Every process a fixture starts is stopped when the fixture ends, pass or fail; a relay that
crashed or printed a sanitizer report fails the test that owned it.
"""

import os
import resource

import pytest

import harness
from byterelay import ByteRelay

TARGET_KINDS = ("direct", "pgwarden", "pgwarden-bytewise")


def _raise_nofile():
    # The 1,000-connection scenario holds a socket per client here and two per session in
    # the daemon (which inherits this limit), so lift the soft limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_nofile()


def pytest_configure(config):
    config.addinivalue_line("markers", "targets(*kinds): run a target test only for these "
                            "kinds (direct, pgwarden, pgwarden-bytewise)")
    config.addinivalue_line("markers", "relay_args(*args): extra pgwardend flags for the "
                            "relay behind the `target` fixture")


def pytest_generate_tests(metafunc):
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("targets")
    kinds = marker.args if marker else TARGET_KINDS
    unknown = set(kinds) - set(TARGET_KINDS)
    if unknown:
        raise pytest.UsageError("unknown target kinds %s in %s"
                                % (sorted(unknown), metafunc.definition.nodeid))
    metafunc.parametrize("target", kinds, indirect=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so teardown code can tell whether the test failed
    # (and then show the daemon's log).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture(scope="session")
def pg():
    cluster = harness.PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pgwardend_bin():
    path = os.environ.get("PGWARDEND") or os.path.join(harness.REPO_ROOT, "build", "pgwardend")
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # Not a skip: `make check-integration` builds the daemon first, so a missing binary
        # means the suite was started the wrong way, and skipping would hide that.
        pytest.fail("pgwardend not found at %s: run `make check-integration` (it builds the "
                    "daemon) or set PGWARDEND=/path/to/pgwardend" % path, pytrace=False)
    return path


@pytest.fixture
def relay_factory(pg, pgwardend_bin, tmp_path, request):
    started = []

    def start_relay(upstream=None, workers=2, extra_args=(), config_text=None, env=None):
        r = harness.Relay(pgwardend_bin, upstream or (pg.host, pg.port), pg, str(tmp_path),
                          workers=workers, extra_args=extra_args, config_text=config_text,
                          env=env)
        started.append(r)
        r.start()
        return r

    yield start_relay

    problems = []
    for r in started:
        try:
            r.stop(check=True)
        except AssertionError as e:
            problems.append(str(e))
        if _test_failed(request):
            print("\n" + r.log_tail(60))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def relay(relay_factory):
    return relay_factory()


@pytest.fixture
def byte_relay_factory():
    started = []

    def start_byte_relay(target, chunk=1):
        br = ByteRelay(tuple(target), chunk=chunk).start()
        started.append(br)
        return br

    yield start_byte_relay
    for br in started:
        br.stop()


@pytest.fixture
def target(request, pg):
    kind = request.param
    if kind == "direct":
        return harness.Target(kind, pg, pg)
    # Asked for only here, so direct runs need no daemon binary.
    relay_factory = request.getfixturevalue("relay_factory")
    byte_relay_factory = request.getfixturevalue("byte_relay_factory")
    marker = request.node.get_closest_marker("relay_args")
    args = list(marker.args) if marker else []
    if kind == "pgwarden-bytewise":
        # One byte per send() stretches a 1 MiB CopyData over seconds, and over the default
        # 30 s message timeout on a loaded machine: framing, not that timeout, is under test.
        args = ["--timeouts-message", "300s"] + args
    relay = relay_factory(extra_args=args)
    if kind == "pgwarden":
        return harness.Target(kind, relay, pg, relay=relay)
    br = byte_relay_factory((relay.host, relay.port), chunk=1)
    return harness.Target(kind, br, pg, relay=relay, byte_relay=br)
