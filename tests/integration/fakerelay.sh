#!/bin/sh
# A stand-in for pgwardend that only forwards bytes (tests/integration/byterelay.py run as a
# program). It exercises the harness and the scenarios while the daemon cannot run:
#   PGWARDEND=tests/integration/fakerelay.sh /usr/bin/python3 -m pytest tests/integration
# Scenarios that read the daemon's own log lines will fail against it, as they should.
exec /usr/bin/python3 "$(dirname "$0")/byterelay.py" "$@"
