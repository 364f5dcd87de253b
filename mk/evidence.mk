# Compliance evidence (docs/COMPLIANCE.md): run the tests docs/compliance-map.json names, write
# a signed JSON report and an HTML page.
#
#   make evidence                                  every mapped test, into build/evidence
#   make evidence EVIDENCE_KEY=/etc/pgwarden/audit.key   signed with that key
#   make evidence EVIDENCE_ARGS='--controls NIST-AU-9,PCI-8.2.8'   a subset
#
# Without EVIDENCE_KEY a key pair is made for the run (its public half beside the report).
# Exit status 1 when a mapped test failed; skipped tests leave their controls "not proven".
EVIDENCE_DIR ?= $(BUILD)/evidence
EVIDENCE_KEY ?=
EVIDENCE_ARGS ?=

.PHONY: evidence
evidence: $(DAEMON) $(CTL) $(TOP) $(UNIT_BINS)
	$(INTEGRATION_PYTHON) tools/evidence.py run --build $(BUILD) --out $(EVIDENCE_DIR) \
		$(if $(EVIDENCE_KEY),--key $(EVIDENCE_KEY)) $(EVIDENCE_ARGS)

# tests/integration/test_evidence.py runs a subset: the map check and the suites it names.
check-integration: $(BUILD)/tests/test_compliance_map $(BUILD)/tests/test_tls
