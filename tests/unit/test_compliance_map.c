/*
 * test_compliance_map: docs/compliance-map.json and the test suites stay in step.
 *
 * Every test the map names must exist where it says: a pytest function `def NAME(` in
 * tests/integration/test_x.py, or a cmocka test registered with cmocka_unit_test*(NAME...) in
 * tests/unit/test_x.c (a function that is defined but no longer run proves nothing). Every
 * control the live collector names must be in the map, and docs/COMPLIANCE.md must name
 * every control and test (it is generated: tools/evidence.py render-md). Removing or
 * renaming a control test fails this suite until the map says what proves the control now.
 *
 * Run from tests/unit (as make check-unit does): the repository is ../..
 */
#include "evidence/evidence.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPO "../.."

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else if (buf) {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

static bool ident_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* Does text define the pytest function name (at the start of a line, maybe indented)? */
static bool py_defines(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strstr(text, "def "); p; p = strstr(p + 1, "def ")) {
		const char *line = p;

		while (line > text && (line[-1] == ' ' || line[-1] == '\t'))
			line--;
		if (line != text && line[-1] != '\n')
			continue;
		if (strncmp(p + 4, name, n) == 0 && p[4 + n] == '(')
			return true;
	}
	return false;
}

/* Does text register the cmocka test name: cmocka_unit_test[_suffix](name) or (name, ...)? */
static bool c_registers(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strstr(text, "cmocka_unit_test"); p;
	     p = strstr(p + 1, "cmocka_unit_test")) {
		const char *q = p + strlen("cmocka_unit_test");

		while (ident_char(*q))
			q++;
		if (*q++ != '(')
			continue;
		while (*q == ' ')
			q++;
		if (strncmp(q, name, n) == 0 && !ident_char(q[n]))
			return true;
	}
	return false;
}

/*
 * Check one map against the repository at root. Returns the number of problems, each
 * described on a line appended to report (when not NULL).
 */
static unsigned map_check(const char *map_text, const char *root, char *report, size_t cap)
{
	json_error_t je;
	json_t *map = json_loads(map_text, JSON_REJECT_DUPLICATES, &je), *controls, *frameworks;
	json_t *c;
	size_t i;
	unsigned problems = 0;

#define PROBLEM(...)                                                                       \
	do {                                                                               \
		problems++;                                                                \
		if (report) {                                                              \
			size_t used = strlen(report);                                      \
			snprintf(report + used, cap - used, __VA_ARGS__);                  \
			used = strlen(report);                                             \
			snprintf(report + used, cap - used, "\n");                         \
		}                                                                          \
	} while (0)

	if (report)
		report[0] = '\0';
	if (!map) {
		PROBLEM("map: not JSON: line %d: %s", je.line, je.text);
		return problems;
	}
	controls = json_object_get(map, "controls");
	frameworks = json_object_get(map, "frameworks");
	if (!json_is_array(controls) || !json_is_object(frameworks) ||
	    !json_is_string(json_object_get(map, "format")) ||
	    strcmp(json_string_value(json_object_get(map, "format")),
		   "pgwarden-compliance-map/1") != 0) {
		PROBLEM("map: not a pgwarden-compliance-map/1 with controls and frameworks");
		json_decref(map);
		return problems;
	}
	json_array_foreach(controls, i, c) {
		static const char *const fields[] = {"id", "framework", "ref", "requirement",
						     "feature", "coverage", "configure", "operator"};
		const char *id = json_string_value(json_object_get(c, "id"));
		const char *cov = json_string_value(json_object_get(c, "coverage"));
		json_t *tests = json_object_get(c, "tests"), *t, *other;
		size_t j, k;

		for (j = 0; j < sizeof(fields) / sizeof(fields[0]); j++)
			if (!json_string_length(json_object_get(c, fields[j])))
				PROBLEM("control %zu (%s): no \"%s\"", i, id ? id : "?", fields[j]);
		if (!id)
			continue;
		if (cov && strcmp(cov, "full") && strcmp(cov, "partial") && strcmp(cov, "none"))
			PROBLEM("%s: coverage \"%s\" is not full, partial or none", id, cov);
		if (!json_object_get(frameworks,
				     json_string_value(json_object_get(c, "framework")) ?: ""))
			PROBLEM("%s: framework not listed under frameworks", id);
		json_array_foreach(controls, k, other)
			if (k < i && json_equal(json_object_get(other, "id"), json_object_get(c, "id")))
				PROBLEM("%s: listed twice", id);
		if (!json_array_size(tests) && strcmp(cov ?: "", "none") != 0)
			PROBLEM("%s: names no test although its coverage is %s", id, cov ?: "?");
		json_array_foreach(tests, j, t) {
			const char *name = json_string_value(t), *sep;
			char path[1024], file[512];
			char *text;
			bool py, found;

			if (!name || !(sep = strstr(name, "::")) || (size_t)(sep - name) >= sizeof(file)) {
				PROBLEM("%s: test %zu is not \"path::name\"", id, j);
				continue;
			}
			memcpy(file, name, (size_t)(sep - name));
			file[sep - name] = '\0';
			py = strncmp(file, "tests/integration/test_", 23) == 0 &&
			     strlen(file) > 3 && strcmp(file + strlen(file) - 3, ".py") == 0;
			if (!py && !(strncmp(file, "tests/unit/test_", 16) == 0 && strlen(file) > 2 &&
				     strcmp(file + strlen(file) - 2, ".c") == 0)) {
				PROBLEM("%s: %s is neither tests/integration/test_*.py nor "
					"tests/unit/test_*.c", id, name);
				continue;
			}
			snprintf(path, sizeof(path), "%s/%s", root, file);
			text = slurp(path);
			if (!text) {
				PROBLEM("%s: %s: the file %s does not exist", id, name, file);
				continue;
			}
			found = py ? py_defines(text, sep + 2) : c_registers(text, sep + 2);
			if (!found)
				PROBLEM("%s: %s: no such test (%s)", id, name,
					py ? "no def of that name" : "not registered with cmocka_unit_test");
			free(text);
		}
	}
	json_decref(map);
	return problems;
#undef PROBLEM
}

static char *real_map(void)
{
	char *text = slurp(REPO "/docs/compliance-map.json");

	assert_non_null(text);
	return text;
}

static void test_map_names_only_tests_that_exist(void **state)
{
	static char report[16384];
	char *text = real_map();
	unsigned n = map_check(text, REPO, report, sizeof(report));

	if (n)
		fail_msg("docs/compliance-map.json: %u problem(s):\n%s", n, report);
	free(text);
}

/* Hostile: each way the map and the suites drift apart is caught, and named. */
static void replace_once(char **text, const char *from, const char *to)
{
	char *at = strstr(*text, from), *out;

	assert_non_null(at);
	out = malloc(strlen(*text) - strlen(from) + strlen(to) + 1);
	assert_non_null(out);
	memcpy(out, *text, (size_t)(at - *text));
	strcpy(out + (at - *text), to);
	strcat(out, at + strlen(from));
	free(*text);
	*text = out;
}

static void test_drift_is_caught(void **state)
{
	static const struct {
		const char *from, *to, *named;
	} cases[] = {
		/* a pytest that does not exist */
		{"test_policy.py::test_timeouts\"", "test_policy.py::test_timeout\"",
		 "test_policy.py::test_timeout: no such test"},
		/* a prefix of a real name is not that test */
		{"test_auth_flow.c::test_lockout_rules\"", "test_auth_flow.c::test_lockout\"",
		 "test_lockout: no such test"},
		/* defined but not registered: a static helper, not a test */
		{"test_evidence.c::test_oversized", "test_evidence.c::sign_text\", \"x::test_oversized",
		 "sign_text: no such test"},
		/* a file that is gone */
		{"tests/unit/test_tls.c::test_fips\"", "tests/unit/test_tlsx.c::test_fips\"",
		 "does not exist"},
		{"\"coverage\": \"full\"", "\"coverage\": \"mostly\"", "is not full, partial or none"},
		{"\"id\": \"NIST-AU-3\"", "\"id\": \"NIST-AU-2\"", "NIST-AU-2: listed twice"},
		{"\"framework\": \"HIPAA\"", "\"framework\": \"GDPR\"", "framework not listed"},
		{"\"operator\": \"Choose the times.\"", "\"operator\": \"\"", "no \"operator\""},
	};
	static char report[16384];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = real_map();
		unsigned n;

		/* The test_evidence case needs a control that names it: give AU-3 one. */
		if (strstr(cases[i].from, "test_evidence"))
			replace_once(&text, "\"tests/unit/test_audit_record.c::test_canonical_form\"",
				     "\"tests/unit/test_audit_record.c::test_canonical_form\", "
				     "\"tests/unit/test_evidence.c::test_oversized_signature_refused\"");
		replace_once(&text, cases[i].from, cases[i].to);
		n = map_check(text, REPO, report, sizeof(report));
		if (n == 0 || !strstr(report, cases[i].named))
			fail_msg("case %zu: %u problem(s), want \"%s\":\n%s", i, n, cases[i].named,
				 report);
		free(text);
	}
	assert_true(map_check("{", REPO, report, sizeof(report)) == 1);
	assert_true(map_check("{\"format\": \"x\"}", REPO, report, sizeof(report)) == 1);
}

static bool map_has_control(const char *text, const char *id)
{
	char quoted[128];

	snprintf(quoted, sizeof(quoted), "\"id\": \"%s\"", id);
	return strstr(text, quoted) != NULL;
}

static void test_live_facts_name_controls_in_the_map(void **state)
{
	char *text = real_map();

	for (unsigned f = 0; f < EVIDENCE_FACT_COUNT; f++) {
		assert_non_null(evidence_live_facts[f].name);
		assert_non_null(evidence_live_facts[f].controls[0]);
		for (unsigned i = 0; evidence_live_facts[f].controls[i]; i++)
			if (!map_has_control(text, evidence_live_facts[f].controls[i]))
				fail_msg("live fact %s names %s, which is not in the map",
					 evidence_live_facts[f].name, evidence_live_facts[f].controls[i]);
	}
	free(text);
}

/* COMPLIANCE.md is generated from the map; an edit of one without the other shows. */
static void test_compliance_md_names_every_control_and_test(void **state)
{
	char *text = real_map(), *doc = slurp(REPO "/docs/COMPLIANCE.md");
	json_t *map = json_loads(text, 0, NULL), *c, *t;
	size_t i, j;

	assert_non_null(doc);
	assert_non_null(map);
	json_array_foreach(json_object_get(map, "controls"), i, c) {
		char heading[128];

		snprintf(heading, sizeof(heading), "\n### %s\n",
			 json_string_value(json_object_get(c, "id")));
		if (!strstr(doc, heading))
			fail_msg("docs/COMPLIANCE.md has no section for %s: run tools/evidence.py "
				 "render-md", json_string_value(json_object_get(c, "id")));
		json_array_foreach(json_object_get(c, "tests"), j, t) {
			char item[512];

			snprintf(item, sizeof(item), "`%s`", json_string_value(t));
			if (!strstr(doc, item))
				fail_msg("docs/COMPLIANCE.md does not name %s: run tools/evidence.py "
					 "render-md", json_string_value(t));
		}
	}
	json_decref(map);
	free(doc);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map_names_only_tests_that_exist),
		cmocka_unit_test(test_drift_is_caught),
		cmocka_unit_test(test_live_facts_name_controls_in_the_map),
		cmocka_unit_test(test_compliance_md_names_every_control_and_test),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
