# End-to-end steering suite: BPF hooks on a cgroup the tests create, pgwardend and a real
# PostgreSQL 15 on loopback, remote clients in network namespaces the tests create. Root only
# (the suite skips, saying so, otherwise). Every cgroup, namespace, veth, rule, route, nft
# table and pin a test makes is removed by its fixtures, pass or fail.
#
#   make check-e2e                          everything
#   make check-e2e E2E_ARGS='-k tproxy'     a subset
E2E_PYTHON ?= /usr/bin/python3
E2E_ARGS ?=

# pytest exits 5 when it collected no tests: a suite that silently ran nothing is a failure.
check-e2e: $(DAEMON) $(CTL)
	@PGWARDEND=$(abspath $(DAEMON)) PGWARDENCTL=$(abspath $(CTL)) \
		$(E2E_PYTHON) -m pytest -q -p no:cacheprovider -rs $(E2E_ARGS) tests/e2e; \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "check-e2e: no tests were collected" >&2; exit 1; fi; \
	exit $$rc
