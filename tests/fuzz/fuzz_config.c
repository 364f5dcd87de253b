/*
 * fuzz_config: arbitrary bytes as a pgwardend config file.
 *
 * Beyond "no crash, no leak, no undefined behaviour" the target checks what the loader
 * promises:
 *   - a failed load writes exactly one line, naming the file, and leaves the config as it
 *     was (every key compared before and after);
 *   - a successful load writes back (config_write_yaml) as a document that loads into a
 *     fresh config with every key equal: the writer and the loader agree on every value
 *     the loader can produce;
 *   - short inputs are also tried as one "KEY=VALUE" flag, which must either apply or fail
 *     with one line.
 * A broken promise aborts, which libFuzzer reports with the input that caused it.
 */
#include "config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz.yaml"
#define SNAP_MAX 65536 /* nine TLS file paths of 4095 bytes fit */

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_config: broken promise: %s\n", what);
		abort();
	}
}

/* Every key's value, joined; snap must hold SNAP_MAX bytes. */
static void snapshot(const struct config *cfg, char *snap)
{
	size_t len = 0;

	snap[0] = '\0';
	for (size_t i = 0; config_keys[i]; i++) {
		char v[4096]; /* 64 deny ranges fit */
		int w;

		check(config_get(cfg, config_keys[i], v, sizeof(v)) == 0, "config_get failed");
		w = snprintf(snap + len, SNAP_MAX - len, "%s=%s\n", config_keys[i], v);
		check(w > 0 && (size_t)w < SNAP_MAX - len, "snapshot overflow");
		len += (size_t)w;
	}
}

static void check_one_line(const char *err)
{
	check(err[0] != '\0', "error without a message");
	check(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL, "error spans lines");
}

static void fuzz_file(const uint8_t *data, size_t size)
{
	static char before[SNAP_MAX], after[SNAP_MAX];
	struct config *cfg = config_new(), *back;
	char err[CONFIG_ERR_MAX] = "";
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (!cfg)
		return;
	snapshot(cfg, before);
	if (config_load_buffer(cfg, FUZZ_NAME, (const char *)data, size, err, sizeof(err))) {
		check_one_line(err);
		check(strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) == 0,
		      "error does not name the file");
		snapshot(cfg, after);
		check(strcmp(before, after) == 0, "failed load changed the config");
		config_unref(cfg);
		return;
	}
	if (config_validate(cfg, err, sizeof(err)))
		check_one_line(err);

	f = open_memstream(&text, &len);
	if (!f) {
		config_unref(cfg);
		return;
	}
	check(config_write_yaml(cfg, f) == 0, "write failed");
	fclose(f);
	back = config_new();
	if (back) {
		if (config_load_buffer(back, "written", text, len, err, sizeof(err))) {
			fprintf(stderr, "%s\n---\n%s", err, text);
			check(0, "written config does not load");
		}
		snapshot(cfg, before);
		snapshot(back, after);
		check(strcmp(before, after) == 0, "written config reads back different");
		check(config_restart_required(cfg, back) == NULL, "restart keys differ");
		config_unref(back);
	}
	free(text);
	config_unref(cfg);
}

/* "KEY=VALUE" as config_set() gets it from the command line. */
static void fuzz_flag(const uint8_t *data, size_t size)
{
	char buf[256], err[CONFIG_ERR_MAX] = "", *eq;
	struct config *cfg;

	if (size >= sizeof(buf) || memchr(data, '\0', size))
		return;
	memcpy(buf, data, size);
	buf[size] = '\0';
	eq = strchr(buf, '=');
	if (!eq)
		return;
	*eq = '\0';
	cfg = config_new();
	if (!cfg)
		return;
	if (config_set(cfg, buf, eq + 1, err, sizeof(err)))
		check_one_line(err);
	else
		check(config_key_lookup(buf) != NULL, "config_set accepted an unknown key");
	config_unref(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_file(data, size);
	fuzz_flag(data, size);
	return 0;
}
