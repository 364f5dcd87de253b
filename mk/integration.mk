# Integration suite: real PostgreSQL 15 (a throwaway cluster the tests start themselves),
# real clients (psql, pgbench, psycopg 3) against the daemon built in $(BUILD).
#
#   make check-integration                         everything
#   make check-integration PYTEST_ARGS='-k copy'   a subset (see tests/integration/README.md)
#   make BUILD=build/san SAN=1 check-integration   the same under ASan + UBSan
#
# Debian's python3 is used by path: psycopg 3 and pytest come from Debian packages
# (scripts/install-deps.sh), not from whatever python3 comes first on PATH.
INTEGRATION_PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=
# Files run in parallel workers (pytest-xdist), each with its own throwaway cluster: the
# suites wait on the network far more than they compute. INTEGRATION_JOBS=1 runs serially.
INTEGRATION_JOBS ?= 3
ifneq ($(filter-out 0 1,$(INTEGRATION_JOBS)),)
PYTEST_PARALLEL := -n $(INTEGRATION_JOBS) --dist loadfile
endif

# Under sanitizers a leak or an error aborts the daemon; the harness also scans its stderr at
# every stop and fails the test that owned it on any report.
ifeq ($(SAN),1)
INTEGRATION_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
endif

# The admin and pgwarden-top scenarios drive the tools found beside the daemon, so all three
# are built. pytest exits 5 when it collected no tests: a suite that silently ran nothing is a
# failure.
check-integration: $(DAEMON) $(CTL) $(TOP)
	@PGWARDEND=$(abspath $(DAEMON)) $(INTEGRATION_ENV) \
		$(INTEGRATION_PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) $(PYTEST_ARGS) tests/integration; \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "check-integration: no tests were collected" >&2; exit 1; fi; \
	exit $$rc
