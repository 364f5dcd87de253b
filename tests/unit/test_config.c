/*
 * config unit tests: defaults, every key through the file and through config_set, the
 * value parsers, every class of error with the exact line an operator would see, and the
 * docs kept in step with the settings table.
 *
 * Most file cases are data: tests/unit/data/config/NAME.yaml with NAME.expect beside it,
 * read at run time (cwd is tests/unit). An .expect file holds:
 *
 *   load: ok                      or   load: error <the exact message>
 *   <key> = <value>               config_get() after a successful load (any number)
 *   validate: ok                  or   validate: error <the exact message>
 *
 * Lines starting with '#' are comments. Every case is also loaded through
 * config_load_buffer() and must give the same result.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config/config.h"
#include "case_file.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CASE_DIR "data/config"
#define CONFIG_LONGEST_FILE 4095 /* the longest path a TLS file setting accepts */
#define VALUE_MAX 4096 /* 64 deny ranges fit */

static size_t nkeys(void)
{
	size_t n = 0;

	while (config_keys[n])
		n++;
	return n;
}

static void assert_get(const struct config *cfg, const char *key, const char *want)
{
	char got[VALUE_MAX];

	assert_int_equal(config_get(cfg, key, got, sizeof(got)), 0);
	if (strcmp(got, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", key, got, want);
}

static void assert_set_ok(struct config *cfg, const char *key, const char *value)
{
	char err[CONFIG_ERR_MAX] = "";

	if (config_set(cfg, key, value, err, sizeof(err)) != 0)
		fail_msg("config_set(%s, %s): %s", key, value, err);
}

static void assert_set_err(struct config *cfg, const char *key, const char *value,
			   const char *want)
{
	char err[CONFIG_ERR_MAX] = "";

	if (config_set(cfg, key, value, err, sizeof(err)) == 0)
		fail_msg("config_set(%s, %s) succeeded, want \"%s\"", key, value, want);
	if (strcmp(err, want) != 0)
		fail_msg("config_set(%s, %s): got \"%s\", want \"%s\"", key, value, err, want);
}

/* Every key's formatted value, joined, to compare two configs or one config over time. */
static char *snapshot(const struct config *cfg)
{
	size_t cap = 65536, len = 0;
	char *s = malloc(cap);

	assert_non_null(s);
	s[0] = '\0';
	for (size_t i = 0; config_keys[i]; i++) {
		char v[VALUE_MAX];
		int w;

		assert_int_equal(config_get(cfg, config_keys[i], v, sizeof(v)), 0);
		w = snprintf(s + len, cap - len, "%s=%s\n", config_keys[i], v);
		assert_true(w > 0 && (size_t)w < cap - len);
		len += (size_t)w;
	}
	return s;
}

static char *read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			data = realloc(data, cap + 1);
			assert_non_null(data);
		}
		size_t r = fread(data + n, 1, cap - n, f);

		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	data[n] = '\0';
	*len = n;
	return data;
}

/* ---- defaults and flags ------------------------------------------------------------- */

static void test_defaults(void **state)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX];

	assert_non_null(cfg);
	assert_int_equal(cfg->refcount, 1);
	assert_int_equal(cfg->nlisten, 0);
	assert_false(cfg->has_upstream);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->buffer_size, 32 * 1024);
	assert_int_equal(cfg->max_message_size, 0x3fffffff);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->startup_timeout_ms, 60000);
	assert_int_equal(cfg->message_timeout_ms, 30000);
	assert_int_equal(cfg->connect_timeout_ms, 10000);
	assert_int_equal(cfg->drain_timeout_ms, 30000);
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_string_equal(cfg->admin_socket, CONFIG_DEFAULT_ADMIN_SOCKET);
	assert_null(cfg->metrics_listen);
	assert_int_equal(cfg->ntproxy_listen, 0);
	assert_true(cfg->transparent_source);
	assert_string_equal(cfg->steer_instance, "pgwarden");
	assert_false(cfg->listen_from_flag);
	assert_false(cfg->tproxy_listen_from_flag);
	/* The admission gate is off unless asked for. */
	assert_false(cfg->gate_enabled);
	assert_int_equal(cfg->gate_rate_per_hour, 0);
	assert_int_equal(cfg->gate_burst, 0);
	assert_int_equal(cfg->gate_max_sources, 65536);
	assert_int_equal(cfg->ngate_deny, 0);
	assert_false(cfg->gate_deny_from_flag);

	assert_get(cfg, "listen", "");
	assert_get(cfg, "tproxy_listen", "");
	assert_get(cfg, "transparent_source", "true");
	assert_get(cfg, "steer_instance", "pgwarden");
	assert_get(cfg, "upstream", "");
	assert_get(cfg, "buffer_size", "32KiB");
	assert_get(cfg, "max_message_size", "1073741823");
	assert_get(cfg, "timeouts.startup", "1m");
	assert_get(cfg, "log_level", "info");
	assert_get(cfg, "metrics_listen", "");
	assert_get(cfg, "gate.queue", "off");
	assert_get(cfg, "gate.rate", "0/s");
	assert_get(cfg, "gate.deny", "");
	/* TLS: off towards clients until a certificate is given, libpq's prefer upstream. */
	assert_int_equal(cfg->tls_client_mode, CONFIG_TLS_CLIENT_DISABLE);
	assert_int_equal(cfg->tls_client_verify, CONFIG_TLS_VERIFY_NONE);
	assert_int_equal(cfg->tls_server_mode, CONFIG_TLS_SERVER_PREFER);
	assert_int_equal(cfg->tls_min_version, CONFIG_TLS_V1_2);
	assert_null(cfg->tls_client_cert_file);
	assert_null(cfg->tls_server_name);
	assert_false(cfg->tls_session_tickets);
	assert_false(cfg->tls_fips);
	assert_get(cfg, "tls.client.mode", "disable");
	assert_get(cfg, "tls.server.mode", "prefer");
	assert_get(cfg, "tls.client.cert_file", "");
	assert_get(cfg, "tls.ciphers", "ECDHE+AESGCM:ECDHE+CHACHA20");
	assert_get(cfg, "tls.ciphersuites",
		   "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
	assert_get(cfg, "tls.groups", "X25519:P-256:P-384");
	assert_get(cfg, "tls.min_version", "TLSv1.2");

	/* Defaults alone are not a working config: where to listen and forward is required. */
	assert_int_equal(config_validate(cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "listen: at least one listen address is required");
	config_unref(cfg);
}

struct set_case {
	const char *key;   /* as passed to config_set: key or flag spelling */
	const char *value;
	const char *want;  /* config_get() afterwards */
};

static void test_set_every_key(void **state)
{
	static const struct set_case cases[] = {
		{"listen", "127.0.0.1:6432", "127.0.0.1:6432"},
		{"upstream", "[::1]:5432", "[::1]:5432"},
		{"workers", "4", "4"},
		{"pin_workers", "false", "false"},
		{"pin-workers", "on", "true"},
		{"buffer_size", "64KiB", "64KiB"},
		{"max_message_size", "16MiB", "16MiB"},
		{"max_connections", "500", "500"},
		{"timeouts.startup", "45s", "45s"},
		{"timeouts.message", "1500ms", "1500ms"},
		{"timeouts.connect", "2m", "2m"},
		{"timeouts.drain", "0", "0s"},
		{"log_level", "debug", "debug"},
		{"admin_socket", "/tmp/pgw.sock", "/tmp/pgw.sock"},
		{"metrics_listen", "127.0.0.1:9187", "127.0.0.1:9187"},
		{"tproxy_listen", "0.0.0.0:6433", "0.0.0.0:6433"},
		{"transparent_source", "false", "false"},
		{"steer_instance", "pg-prod_2", "pg-prod_2"},
		{"unix_listen", "/run/pgwarden/.s.PGSQL.5432", "/run/pgwarden/.s.PGSQL.5432"},
		{"unix_upstream", "/var/run/postgresql/.s.PGSQL.5432", "/var/run/postgresql/.s.PGSQL.5432"},
		{"policy", "/etc/pgwarden/policy.yaml", "/etc/pgwarden/policy.yaml"},
		/* flag spellings */
		{"buffer-size", "4096", "4KiB"},
		{"max-message-size", "8192", "8KiB"},
		{"max-connections", "1", "1"},
		{"session.max_pipeline", "16", "16"},
		{"session-max-prepared-statements", "250", "250"},
		{"session.max_prepared_bytes", "2MiB", "2MiB"},
		{"timeouts-startup", "600", "10m"},
		{"timeouts-message", "100ms", "100ms"},
		{"timeouts-connect", "10m", "10m"},
		{"timeouts-drain", "3600", "1h"},
		{"log-level", "error", "error"},
		{"admin-socket", "/run/x.sock", "/run/x.sock"},
		{"metrics-listen", "[::1]:9187", "[::1]:9187"},
		{"metrics-listen", "off", ""},
		{"metrics_listen", "", ""},
		{"upstream", "10.0.0.5:5432", "10.0.0.5:5432"},
		{"tproxy-listen", "[::]:6433", "0.0.0.0:6433, [::]:6433"},
		/* every spelling of a boolean PostgreSQL and YAML 1.1 share, in any case */
		{"transparent-source", "true", "true"},
		{"transparent-source", "no", "false"},
		{"transparent-source", "YES", "true"},
		{"transparent-source", "off", "false"},
		{"transparent-source", "On", "true"},
		{"transparent-source", "0", "false"},
		{"transparent-source", "1", "true"},
		{"transparent-source", "FALSE", "false"},
		{"steer-instance", "a", "a"},
		{"steer-instance", "abcdefghijklmnopqrstuvwxyz01234", "abcdefghijklmnopqrstuvwxyz01234"},
		{"steer-instance", "null", "null"},
		{"unix-upstream", "off", ""},
		{"unix-listen", "", ""},
		{"unix-listen", "/tmp/x/.s.PGSQL.6432", "/tmp/x/.s.PGSQL.6432"},
		{"gate.queue", "4243", "4243"},
		{"gate-queue", "0", "0"},
		{"gate-queue", "65535", "65535"},
		{"gate-queue", "off", "off"},
		{"gate-queue", "", "off"},
		{"gate-queue", "7", "7"},
		{"gate.rate", "10/s", "10/s"},
		{"gate-rate", "30/m", "30/m"},
		{"gate-rate", "120/m", "2/s"},
		{"gate-rate", "90/h", "90/h"},
		{"gate-rate", "5", "5/s"},
		{"gate-rate", "1000000/s", "1000000/s"},
		{"gate-rate", "0/h", "0/s"},
		{"gate.burst", "20", "20"},
		{"gate-burst", "1000000", "1000000"},
		{"gate.max_sources", "64", "64"},
		{"gate-max-sources", "1048576", "1048576"},
		{"gate.deny", "10.0.0.0/8", "10.0.0.0/8"},
		{"gate-deny", "fd00::/8", "10.0.0.0/8, fd00::/8"}, /* a further flag adds */
		{"gate-deny", "192.0.2.7", "10.0.0.0/8, fd00::/8, 192.0.2.7/32"},
		{"gate-deny", "::ffff:198.51.100.0/120", "10.0.0.0/8, fd00::/8, 192.0.2.7/32, ::ffff:198.51.100.0/120"},
		/* TLS: choices are exact words; files and texts are kept as written */
		{"tls.client.mode", "prefer", "prefer"},
		{"tls-client-mode", "require", "require"},
		{"tls-client-mode", "disable", "disable"},
		{"tls.client.cert_file", "/etc/ssl/certs/pg.pem", "/etc/ssl/certs/pg.pem"},
		{"tls-client-key-file", "/etc/ssl/private/pg.key", "/etc/ssl/private/pg.key"},
		{"tls-client-ca-file", "/etc/pgwarden/clients-ca.pem", "/etc/pgwarden/clients-ca.pem"},
		{"tls-client-crl-file", "/etc/pgwarden/clients.crl", "/etc/pgwarden/clients.crl"},
		{"tls-client-crl-file", "off", ""},
		{"tls.client.verify", "optional", "optional"},
		{"tls-client-verify", "required", "required"},
		{"tls-client-verify", "none", "none"},
		{"tls.server.mode", "verify-full", "verify-full"},
		{"tls-server-mode", "verify-ca", "verify-ca"},
		{"tls-server-mode", "require", "require"},
		{"tls-server-mode", "disable", "disable"},
		{"tls-server-mode", "prefer", "prefer"},
		{"tls.server.ca_file", "/etc/pgwarden/server-ca.pem", "/etc/pgwarden/server-ca.pem"},
		{"tls-server-crl-file", "/etc/pgwarden/server.crl", "/etc/pgwarden/server.crl"},
		{"tls-server-cert-file", "/etc/pgwarden/relay.pem", "/etc/pgwarden/relay.pem"},
		{"tls-server-key-file", "/etc/pgwarden/relay.key", "/etc/pgwarden/relay.key"},
		{"tls.server.server_name", "db.example.com", "db.example.com"},
		{"tls-server-server-name", "10.0.0.5", "10.0.0.5"},
		{"tls-server-server-name", "::1", "::1"},
		{"tls-server-server-name", "off", ""},
		{"tls.min_version", "TLSv1.3", "TLSv1.3"},
		{"tls-min-version", "TLSv1.2", "TLSv1.2"},
		{"tls.ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
		{"tls-ciphersuites", "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"},
		{"tls-groups", "P-384:X25519", "P-384:X25519"},
		{"tls.session_tickets", "yes", "true"},
		{"tls-fips", "on", "true"},
		{"auth.mode", "terminate", "terminate"},
		{"auth-mode", "passthrough", "passthrough"},
		{"auth.server_methods", "scram-sha-256", "scram-sha-256"},
		{"auth-server-methods", "md5,scram-sha-256-plus, trust", "trust, md5, scram-sha-256-plus"},
		{"auth-server-methods", "sspi,gss,password", "password, gss, sspi"}, /* a flag replaces */
		{"auth.users_file", "/etc/pgwarden/users.txt", "/etc/pgwarden/users.txt"},
		{"auth-users-file", "off", ""},
		{"auth.upstream_passwords", "/etc/pgwarden/up.txt", "/etc/pgwarden/up.txt"},
		{"auth.cert_map", "/etc/pgwarden/map", "/etc/pgwarden/map"},
		{"auth-cert-map-name", "clients-2", "clients-2"},
		{"auth.require_cert_and_password", "on", "true"},
		{"auth.mock_secret_file", "/etc/pgwarden/mock", "/etc/pgwarden/mock"},
		{"auth.lockout.failures", "0", "0"},
		{"auth-lockout-failures", "1000", "1000"},
		{"auth.lockout.window", "90s", "90s"},
		{"auth-lockout-duration", "2h", "2h"},
		{"auth-lockout-max-entries", "64", "64"},
		{"server_reuse.max_idle", "32", "32"},
		{"server-reuse-idle-timeout", "90s", "90s"},
		{"server_reuse.lifetime", "2h", "2h"},
		/* the audit block; a group inside a group: audit.checkpoint */
		{"audit.path", "/var/log/pgwarden/audit.jsonl", "/var/log/pgwarden/audit.jsonl"},
		{"audit-signing-key", "/etc/pgwarden/audit.key", "/etc/pgwarden/audit.key"},
		{"audit.fsync", "always", "always"},
		{"audit-fsync", "none", "none"},
		{"audit-fsync", "write", "write"},
		{"audit-fsync", "batch", "batch"},
		{"audit.batch_window", "2ms", "2ms"},
		{"audit-batch-window", "0", "0s"},
		{"audit.queue_size", "64KiB", "64KiB"},
		{"audit-queue-size", "1GiB", "1GiB"},
		{"audit.write_timeout", "100ms", "100ms"},
		{"audit-write-timeout", "1h", "1h"},
		{"audit.on_failure", "continue", "continue"},
		{"audit-on-failure", "reject", "reject"},
		{"audit.parameters", "yes", "true"},
		{"audit.literals", "on", "true"},
		{"audit-literals", "false", "false"},
		{"audit.max_text", "256", "256"},
		{"audit-max-text", "1MiB", "1MiB"},
		{"audit.rotate_size", "0", "0"},
		{"audit-rotate-size", "64MiB", "64MiB"},
		{"audit.rotate_interval", "0", "0s"},
		{"audit-rotate-interval", "168h", "168h"},
		{"audit.checkpoint.records", "1", "1"},
		{"audit-checkpoint-records", "1000000", "1000000"},
		{"audit.checkpoint.interval", "1s", "1s"},
		{"audit-checkpoint-interval", "24h", "24h"},
		{"audit.disk_warn", "100", "100"},
		{"audit-disk-warn", "1", "1"},
		{"audit.group", "pgwarden-audit", "pgwarden-audit"},
		{"audit-group", "adm", "adm"},
		{"audit.syslog_socket", "/dev/log", "/dev/log"},
		{"audit-syslog-address", "192.0.2.10:514", "192.0.2.10:514"},
		{"audit-syslog-address", "[2001:db8::1]:514", "[2001:db8::1]:514"},
		{"audit-syslog-address", "off", ""},
		{"mask.key_file", "/etc/pgwarden/mask.key", "/etc/pgwarden/mask.key"},
		{"mask-key-file", "off", ""},
		{"mask.row_lookahead", "1KiB", "1KiB"},
		{"mask-row-lookahead", "64MiB", "64MiB"},
		{"mask.catalog_user", "pgwarden_catalog", "pgwarden_catalog"},
		{"mask-catalog-user", "off", ""},
		{"mask.catalog_database", "app db", "app db"},
		{"mask.catalog_passwords", "/etc/pgwarden/catalog.txt", "/etc/pgwarden/catalog.txt"},
		{"mask.catalog_timeout", "100ms", "100ms"},
		{"mask-catalog-timeout", "10m", "10m"},
		{"mask.catalog_refresh", "0", "0s"},
		{"mask-catalog-refresh", "24h", "24h"},
		{"admission.prelogin_max", "1", "1"},
		{"admission-prelogin-max", "1000000", "1000000"},
		{"admission-prelogin-per-source", "64", "64"},
		{"admission.rate", "600/m", "10/s"},
		{"admission-burst", "30", "30"},
		{"admission-max-sources", "64", "64"},
		{"log_target", "journal", "journal"},
		{"log-target", "syslog", "syslog"},
		{"log-target", "stderr", "stderr"},
		{"log-target", "auto", "auto"},
		{"admin_read_group", "pgwarden-read", "pgwarden-read"},
		{"admin-read-group", "_monitor.ops", "_monitor.ops"},
		{"admin-read-group", "abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"},
		{"admin-read-group", "off", ""},
		{"restart_drain", "10m", "10m"},
		{"restart-drain", "1s", "1s"},
		{"restart-drain", "24h", "24h"},
	};
	struct config *cfg = config_new();
	size_t covered = 0;

	assert_non_null(cfg);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_set_ok(cfg, cases[i].key, cases[i].value);
		assert_get(cfg, cases[i].key, cases[i].want);
	}
	/* Every key in the table was exercised above, in at least one spelling. */
	for (size_t k = 0; config_keys[k]; k++)
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (strcmp(config_key_lookup(cases[i].key), config_keys[k]) == 0) {
				covered++;
				break;
			}
	assert_int_equal(covered, nkeys());

	assert_int_equal(cfg->workers, 4);
	assert_int_equal(cfg->message_timeout_ms, 100);
	assert_int_equal(cfg->drain_timeout_ms, 3600 * 1000);
	assert_int_equal(cfg->log_level, LOG_ERROR);
	assert_true(cfg->has_upstream);
	assert_null(cfg->metrics_listen);
	assert_int_equal(cfg->ntproxy_listen, 2);
	assert_true(cfg->tproxy_listen_from_flag);
	assert_false(cfg->transparent_source);
	assert_string_equal(cfg->steer_instance, "null");
	assert_string_equal(cfg->unix_listen, "/tmp/x/.s.PGSQL.6432");
	assert_null(cfg->unix_upstream);
	assert_true(cfg->gate_enabled);
	assert_int_equal(cfg->gate_queue, 7);
	assert_int_equal(cfg->gate_rate_per_hour, 0);
	assert_int_equal(cfg->gate_burst, 1000000);
	assert_int_equal(cfg->gate_max_sources, 1048576);
	assert_int_equal(cfg->ngate_deny, 4);
	assert_true(cfg->gate_deny_from_flag);
	assert_true(cfg->gate_deny[0].v4);
	assert_int_equal(cfg->gate_deny[0].bits, 96 + 8);
	assert_false(cfg->gate_deny[1].v4);
	assert_int_equal(cfg->audit_fsync, CONFIG_AUDIT_FSYNC_BATCH);
	assert_int_equal(cfg->audit_on_failure, CONFIG_AUDIT_REJECT);
	assert_int_equal(cfg->audit_checkpoint_records, 1000000);
	assert_int_equal(cfg->audit_checkpoint_interval_ms, 24 * 3600 * 1000);
	assert_true(cfg->audit_parameters);
	assert_false(cfg->audit_literals);
	assert_string_equal(cfg->audit_group, "adm");
	assert_null(cfg->audit_syslog_address);
	config_unref(cfg);
}

/* 4095 characters after a leading '/': one too many for a TLS file path. */
#define LONG_64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LONG_1024 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 \
	LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64
#define LONG_4095 LONG_1024 LONG_1024 LONG_1024 \
	LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 \
	LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 LONG_64 \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static void test_set_errors(void **state)
{
	static const struct {
		const char *key, *value, *want;
	} cases[] = {
		{"nope", "1", "nope: unknown key"},
		{"timeouts", "1s", "timeouts: unknown key"},
		{"timeouts_startup", "1s", "timeouts_startup: unknown key"},
		{"auth", "x", "auth: unknown key"},
		{"mask-catalog-database", "a\nb", "mask-catalog-database: expected a PostgreSQL name (1 to 63 bytes, no control characters), or off, got \"a\\x0ab\""},
		{"mask.catalog_user", "0123456789012345678901234567890123456789012345678901234567890123", "mask.catalog_user: expected a PostgreSQL name (1 to 63 bytes, no control characters), or off, got \"012345678901234567890123456789012345678901234567890123456789...\""},
		{"mask.catalog_timeout", "50ms", "mask.catalog_timeout: \"50ms\" is out of range (100ms to 10m)"},
		{"mask.catalog_refresh", "25h", "mask.catalog_refresh: \"25h\" is out of range (0s to 24h)"},
		{"auth.lockout", "x", "auth.lockout: unknown key"},
		{"auth-mode", "Terminate", "auth-mode: expected one of passthrough, terminate, got \"Terminate\""},
		{"auth.server_methods", "", "auth.server_methods: expected one or more of trust, password, md5, scram-sha-256, scram-sha-256-plus, gss, sspi, got \"\""},
		{"auth.server_methods", "scram-sha-256,,md5", "auth.server_methods: expected one or more of trust, password, md5, scram-sha-256, scram-sha-256-plus, gss, sspi, got \"scram-sha-256,,md5\""},
		{"auth.server_methods", "cert", "auth.server_methods: expected one or more of trust, password, md5, scram-sha-256, scram-sha-256-plus, gss, sspi, got \"cert\""},
		{"auth.users_file", "users.txt", "auth.users_file: expected an absolute path, or off, got \"users.txt\""},
		{"auth.lockout.window", "0", "auth.lockout.window: \"0\" is out of range (1s to 24h)"},
		{"auth.lockout.duration", "8d", "auth.lockout.duration: expected a duration like 30s, 500ms or 2m, got \"8d\""},
		{"--listen", "1.2.3.4:5", "--listen: unknown key"},
		{"workers", "-1", "workers: expected a whole number, got \"-1\""},
		{"workers", "4x", "workers: expected a whole number, got \"4x\""},
		{"workers", "1025", "workers: \"1025\" is out of range (0 to 1024)"},
		{"workers", "99999999999999999999999", "workers: \"99999999999999999999999\" is out of range (0 to 1024)"},
		{"max-connections", "0", "max-connections: \"0\" is out of range (1 to 1000000)"},
		{"buffer_size", "4095", "buffer_size: \"4095\" is out of range (4KiB to 1MiB)"},
		{"buffer_size", "2MiB", "buffer_size: \"2MiB\" is out of range (4KiB to 1MiB)"},
		{"buffer_size", "32kb", "buffer_size: expected a size like 32KiB, 1MiB or a number of bytes, got \"32kb\""},
		{"max_message_size", "1GiB", "max_message_size: \"1GiB\" is out of range (8KiB to 1073741823)"},
		{"max_message_size", "8191", "max_message_size: \"8191\" is out of range (8KiB to 1073741823)"},
		{"timeouts.startup", "10x", "timeouts.startup: expected a duration like 30s, 500ms or 2m, got \"10x\""},
		{"timeouts.startup", "999ms", "timeouts.startup: \"999ms\" is out of range (1s to 10m)"},
		{"timeouts.startup", "11m", "timeouts.startup: \"11m\" is out of range (1s to 10m)"},
		{"timeouts-connect", "0", "timeouts-connect: \"0\" is out of range (100ms to 10m)"},
		{"timeouts.drain", "2h", "timeouts.drain: \"2h\" is out of range (0s to 1h)"},
		{"log_level", "verbose", "log_level: expected one of error, warn, info, debug, got \"verbose\""},
		{"log_level", "", "log_level: expected one of error, warn, info, debug, got \"\""},
		{"listen", "localhost:6432", "listen: expected an address like 127.0.0.1:6432, [::1]:6432 or *:6432, got \"localhost:6432\""},
		{"upstream", "127.0.0.1", "upstream: expected an address like 127.0.0.1:5432 or [::1]:5432, got \"127.0.0.1\""},
		{"upstream", "1.2.3.4:65536", "upstream: expected an address like 127.0.0.1:5432 or [::1]:5432, got \"1.2.3.4:65536\""},
		{"metrics_listen", "[::1]", "metrics_listen: expected a loopback address like 127.0.0.1:9187, or off, got \"[::1]\""},
		{"metrics_listen", "*:9187", "metrics_listen: 0.0.0.0:9187 is not a loopback address (the endpoint has no authentication; scrape through a local agent)"},
		{"metrics_listen", "[::]:9187", "metrics_listen: [::]:9187 is not a loopback address (the endpoint has no authentication; scrape through a local agent)"},
		{"metrics_listen", "10.0.0.1:9187", "metrics_listen: 10.0.0.1:9187 is not a loopback address (the endpoint has no authentication; scrape through a local agent)"},
		{"admin_socket", "run/admin.sock", "admin_socket: expected an absolute path, got \"run/admin.sock\""},
		{"admin_socket", "/tmp/a\nb", "admin_socket: expected an absolute path, got \"/tmp/a\\x0ab\""},
		{"admin_socket", "/tmp/\xff", "admin_socket: expected an absolute path, got \"/tmp/\\xff\""},
		{"admin_socket", "/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "admin_socket: path is longer than 107 bytes"},
		{"tproxy_listen", "localhost:6433", "tproxy_listen: expected an address like 127.0.0.1:6432, [::1]:6432 or *:6432, got \"localhost:6433\""},
		{"tproxy-listen", "[::]", "tproxy-listen: expected an address like 127.0.0.1:6432, [::1]:6432 or *:6432, got \"[::]\""},
		{"transparent_source", "maybe", "transparent_source: expected true or false (or yes/no, on/off, 1/0), got \"maybe\""},
		{"transparent_source", "", "transparent_source: expected true or false (or yes/no, on/off, 1/0), got \"\""},
		{"transparent_source", "2", "transparent_source: expected true or false (or yes/no, on/off, 1/0), got \"2\""},
		{"transparent_source", "tru", "transparent_source: expected true or false (or yes/no, on/off, 1/0), got \"tru\""},
		{"transparent-source", "true ", "transparent-source: expected true or false (or yes/no, on/off, 1/0), got \"true \""},
		{"log_target", "file", "log_target: expected one of auto, stderr, journal, syslog, got \"file\""},
		{"log_target", "Journal", "log_target: expected one of auto, stderr, journal, syslog, got \"Journal\""},
		{"admin_read_group", "1ops", "admin_read_group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"1ops\""},
		{"admin_read_group", "-ops", "admin_read_group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"-ops\""},
		{"admin_read_group", "ops:x", "admin_read_group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"ops:x\""},
		{"admin_read_group", "a\nb", "admin_read_group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"a\\x0ab\""},
		{"admin_read_group", "abcdefghijklmnopqrstuvwxyz0123456", "admin_read_group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"abcdefghijklmnopqrstuvwxyz0123456\""},
		{"restart_drain", "0", "restart_drain: \"0\" is out of range (1s to 24h)"},
		{"restart_drain", "25h", "restart_drain: \"25h\" is out of range (1s to 24h)"},
		{"steer_instance", "", "steer_instance: expected 1 to 31 letters, digits, _ or -, got \"\""},
		{"steer_instance", "abcdefghijklmnopqrstuvwxyz012345", "steer_instance: expected 1 to 31 letters, digits, _ or -, got \"abcdefghijklmnopqrstuvwxyz012345\""},
		{"steer_instance", "pg.prod", "steer_instance: expected 1 to 31 letters, digits, _ or -, got \"pg.prod\""},
		{"steer_instance", "../x", "steer_instance: expected 1 to 31 letters, digits, _ or -, got \"../x\""},
		{"steer-instance", "pg prod", "steer-instance: expected 1 to 31 letters, digits, _ or -, got \"pg prod\""},
		{"steer-instance", "pg\xc3\xa9", "steer-instance: expected 1 to 31 letters, digits, _ or -, got \"pg\\xc3\\xa9\""},
		{"unix_listen", "run/.s.PGSQL.5432", "unix_listen: expected an absolute path, or off, got \"run/.s.PGSQL.5432\""},
		{"unix-upstream", "/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "unix-upstream: path is longer than 107 bytes"},
		{"gate.queue", "65536", "gate.queue: \"65536\" is out of range (0 to 65535)"},
		{"gate-queue", "-1", "gate-queue: expected a whole number, or off, got \"-1\""},
		{"gate-queue", "on", "gate-queue: expected a whole number, or off, got \"on\""},
		{"gate-queue", "1 ", "gate-queue: expected a whole number, or off, got \"1 \""},
		{"gate.rate", "10/d", "gate.rate: expected a rate like 10/s, 30/m or 100/h, got \"10/d\""},
		{"gate-rate", "10 /s", "gate-rate: expected a rate like 10/s, 30/m or 100/h, got \"10 /s\""},
		{"gate-rate", "1.5/s", "gate-rate: expected a rate like 10/s, 30/m or 100/h, got \"1.5/s\""},
		{"gate-rate", "10/S", "gate-rate: expected a rate like 10/s, 30/m or 100/h, got \"10/S\""},
		{"gate-rate", "/s", "gate-rate: expected a rate like 10/s, 30/m or 100/h, got \"/s\""},
		{"gate-rate", "-1/s", "gate-rate: expected a rate like 10/s, 30/m or 100/h, got \"-1/s\""},
		{"gate-rate", "1000001/s", "gate-rate: \"1000001/s\" is out of range (0/s to 1000000/s)"},
		{"gate-rate", "99999999999999999999/h", "gate-rate: \"99999999999999999999/h\" is out of range (0/s to 1000000/s)"},
		{"gate.burst", "1000001", "gate.burst: \"1000001\" is out of range (0 to 1000000)"},
		{"gate-burst", "x", "gate-burst: expected a whole number, got \"x\""},
		{"gate.max_sources", "63", "gate.max_sources: \"63\" is out of range (64 to 1048576)"},
		{"gate-max-sources", "1048577", "gate-max-sources: \"1048577\" is out of range (64 to 1048576)"},
		{"gate.deny", "", "gate.deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"\""},
		{"gate-deny", "10.0.0.0/33", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"10.0.0.0/33\""},
		{"gate-deny", "10.0.0.0/", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"10.0.0.0/\""},
		{"gate-deny", "10.0.0.0/+8", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"10.0.0.0/+8\""},
		{"gate-deny", "10.0.0.0/8 ", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"10.0.0.0/8 \""},
		{"gate-deny", "[::1]", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"[::1]\""},
		{"gate-deny", "10.0.0.1:5432", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"10.0.0.1:5432\""},
		{"gate-deny", "localhost", "gate-deny: expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8, got \"localhost\""},
		{"gate-deny", "10.1.2.3/8", "gate-deny: \"10.1.2.3/8\" has host bits set (the range is 10.0.0.0/8)"},
		{"gate-deny", "192.0.2.129/25", "gate-deny: \"192.0.2.129/25\" has host bits set (the range is 192.0.2.128/25)"},
		{"gate-deny", "fd00::1/64", "gate-deny: \"fd00::1/64\" has host bits set (the range is fd00::/64)"},
		{"tls.client.mode", "on", "tls.client.mode: expected one of disable, prefer, require, got \"on\""},
		{"tls-client-mode", "Require", "tls-client-mode: expected one of disable, prefer, require, got \"Require\""},
		{"tls-client-mode", "verify-full", "tls-client-mode: expected one of disable, prefer, require, got \"verify-full\""},
		{"tls-client-verify", "yes", "tls-client-verify: expected one of none, optional, required, got \"yes\""},
		{"tls-server-mode", "allow", "tls-server-mode: expected one of disable, prefer, require, verify-ca, verify-full, got \"allow\""},
		{"tls-server-mode", "", "tls-server-mode: expected one of disable, prefer, require, verify-ca, verify-full, got \"\""},
		{"tls-min-version", "TLSv1.1", "tls-min-version: expected one of TLSv1.2, TLSv1.3, got \"TLSv1.1\""},
		{"tls-min-version", "1.2", "tls-min-version: expected one of TLSv1.2, TLSv1.3, got \"1.2\""},
		{"tls.client.cert_file", "server.crt", "tls.client.cert_file: expected an absolute path, or off, got \"server.crt\""},
		{"tls-client-key-file", "/tmp/a\nb", "tls-client-key-file: expected an absolute path, or off, got \"/tmp/a\\x0ab\""},
		{"tls-server-server-name", "db_1.example.com", "tls-server-server-name: expected a host name like db.example.com or an IP address, got \"db_1.example.com\""},
		{"tls-server-server-name", "10.0.0.256", "tls-server-server-name: expected a host name like db.example.com or an IP address, got \"10.0.0.256\""},
		{"tls-server-server-name", "db.example.com.", "tls-server-server-name: expected a host name like db.example.com or an IP address, got \"db.example.com.\""},
		{"tls.ciphers", "", "tls.ciphers: expected an OpenSSL list of names joined by ':' (letters, digits and +-!@=_.,), got \"\""},
		{"tls-ciphers", "HIGH MEDIUM", "tls-ciphers: expected an OpenSSL list of names joined by ':' (letters, digits and +-!@=_.,), got \"HIGH MEDIUM\""},
		{"tls-ciphersuites", "TLS_AES_256_GCM_SHA384\n", "tls-ciphersuites: expected an OpenSSL list of names joined by ':' (letters, digits and +-!@=_.,), got \"TLS_AES_256_GCM_SHA384\\x0a\""},
		{"tls-groups", "X25519;P-256", "tls-groups: expected an OpenSSL list of names joined by ':' (letters, digits and +-!@=_.,), got \"X25519;P-256\""},
		{"tls-fips", "fips", "tls-fips: expected true or false (or yes/no, on/off, 1/0), got \"fips\""},
		{"tls-server-ca-file", "/" LONG_4095, "tls-server-ca-file: path is longer than 4095 bytes"},
		{"audit.fsync", "sometimes", "audit.fsync: expected one of always, batch, none, write, got \"sometimes\""},
		{"audit-fsync", "BATCH", "audit-fsync: expected one of always, batch, none, write, got \"BATCH\""},
		{"audit-fsync", "", "audit-fsync: expected one of always, batch, none, write, got \"\""},
		{"audit.on_failure", "ignore", "audit.on_failure: expected one of reject, continue, got \"ignore\""},
		{"audit.path", "audit.log", "audit.path: expected an absolute path, or off, got \"audit.log\""},
		{"audit.path", "/var/log/\x1b[2Jaudit", "audit.path: expected an absolute path, or off, got \"/var/log/\\x1b[2Jaudit\""},
		{"audit.batch_window", "101ms", "audit.batch_window: \"101ms\" is out of range (0s to 100ms)"},
		{"audit.queue_size", "64KiB1", "audit.queue_size: expected a size like 32KiB, 1MiB or a number of bytes, got \"64KiB1\""},
		{"audit.queue_size", "65535", "audit.queue_size: \"65535\" is out of range (64KiB to 1GiB)"},
		{"audit.write_timeout", "99ms", "audit.write_timeout: \"99ms\" is out of range (100ms to 1h)"},
		{"audit.max_text", "255", "audit.max_text: \"255\" is out of range (256 to 1MiB)"},
		{"audit.rotate_size", "2GiB", "audit.rotate_size: \"2GiB\" is out of range (0 to 1GiB)"},
		{"audit.rotate_interval", "169h", "audit.rotate_interval: \"169h\" is out of range (0s to 168h)"},
		{"audit.checkpoint.records", "0", "audit.checkpoint.records: \"0\" is out of range (1 to 1000000)"},
		{"audit-checkpoint-interval", "999ms", "audit-checkpoint-interval: \"999ms\" is out of range (1s to 24h)"},
		{"audit.disk_warn", "101", "audit.disk_warn: \"101\" is out of range (1 to 100)"},
		{"audit.group", "-wheel", "audit.group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"-wheel\""},
		{"audit.group", "a b", "audit.group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"a b\""},
		{"audit.group", "abcdefghijklmnopqrstuvwxyz0123456", "audit.group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"abcdefghijklmnopqrstuvwxyz0123456\""},
		{"audit.group", "adm\n", "audit.group: expected a group name (letters, digits, _ . -; at most 32, not starting with a digit, - or .), or off, got \"adm\\x0a\""},
		{"audit.syslog_address", "collector:514", "audit.syslog_address: expected an address like 192.0.2.10:514, or off, got \"collector:514\""},
		{"audit.checkpoint", "5", "audit.checkpoint: unknown key"},
		{"audit", "x", "audit: unknown key"},
	};
	struct config *cfg = config_new();
	char *before;

	assert_non_null(cfg);
	assert_set_ok(cfg, "upstream", "127.0.0.1:5432");
	before = snapshot(cfg);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_set_err(cfg, cases[i].key, cases[i].value, cases[i].want);
	/* A rejected value leaves the config exactly as it was. */
	char *after = snapshot(cfg);

	assert_string_equal(before, after);
	free(before);
	free(after);

	/* A missing flag argument, and an error buffer too small for the message. */
	char err[CONFIG_ERR_MAX], tiny[8];

	assert_int_equal(config_set(cfg, "workers", NULL, err, sizeof(err)), -1);
	assert_string_equal(err, "workers: missing value");
	assert_int_equal(config_set(cfg, NULL, "1", err, sizeof(err)), -1);
	assert_string_equal(err, "missing key");
	assert_int_equal(config_set(cfg, "workers", "x", tiny, sizeof(tiny)), -1);
	assert_string_equal(tiny, "workers");
	assert_int_equal(config_set(cfg, "workers", "x", NULL, 0), -1);
	config_unref(cfg);
}

static void test_flag_names(void **state)
{
	char buf[64], tiny[4];

	assert_string_equal(config_key_lookup("timeouts-startup"), "timeouts.startup");
	assert_string_equal(config_key_lookup("timeouts.startup"), "timeouts.startup");
	assert_string_equal(config_key_lookup("buffer-size"), "buffer_size");
	assert_string_equal(config_key_lookup("metrics-listen"), "metrics_listen");
	assert_string_equal(config_key_lookup("tproxy-listen"), "tproxy_listen");
	assert_string_equal(config_key_lookup("transparent-source"), "transparent_source");
	assert_string_equal(config_key_lookup("steer-instance"), "steer_instance");
	assert_string_equal(config_key_lookup("gate-queue"), "gate.queue");
	assert_string_equal(config_key_lookup("gate-max-sources"), "gate.max_sources");
	assert_null(config_key_lookup("gate-max_sources"));
	assert_null(config_key_lookup("gate"));
	assert_null(config_key_lookup("timeouts_startup")); /* mixed spellings are not flags */
	assert_null(config_key_lookup("buffer.size"));
	assert_null(config_key_lookup("timeouts"));
	assert_null(config_key_lookup("config"));
	assert_null(config_key_lookup(""));
	assert_null(config_key_lookup(NULL));
	assert_string_equal(config_flag_name("timeouts.drain", buf, sizeof(buf)), "timeouts-drain");
	assert_string_equal(config_flag_name("log-level", buf, sizeof(buf)), "log-level");
	assert_null(config_flag_name("nope", buf, sizeof(buf)));
	assert_null(config_flag_name("workers", tiny, sizeof(tiny)));
	/* Every key's flag maps back to it. */
	for (size_t i = 0; config_keys[i]; i++) {
		assert_non_null(config_flag_name(config_keys[i], buf, sizeof(buf)));
		assert_null(strchr(buf, '.'));
		assert_null(strchr(buf, '_'));
		assert_string_equal(config_key_lookup(buf), config_keys[i]);
	}
}

/* The lists share one mechanism; each keeps its own "came from a flag" state. */
static unsigned list_count(const struct config *cfg, const char *key)
{
	if (strcmp(key, "listen") == 0)
		return cfg->nlisten;
	if (strcmp(key, "tproxy_listen") == 0)
		return cfg->ntproxy_listen;
	assert_string_equal(key, "gate.deny");
	return cfg->ngate_deny;
}

static bool list_from_flag(const struct config *cfg, const char *key)
{
	if (strcmp(key, "listen") == 0)
		return cfg->listen_from_flag;
	if (strcmp(key, "tproxy_listen") == 0)
		return cfg->tproxy_listen_from_flag;
	assert_string_equal(key, "gate.deny");
	return cfg->gate_deny_from_flag;
}

/* The i-th of as many distinct valid items as a list holds. */
static const char *addr_item(unsigned i, char *buf, size_t n)
{
	snprintf(buf, n, "127.0.0.1:%u", 7000 + i);
	return buf;
}

static const char *range_item(unsigned i, char *buf, size_t n)
{
	snprintf(buf, n, "10.%u.0.0/16", i);
	return buf;
}

struct list_case {
	const char *key, *other_key; /* other_key: an address list */
	const char *file;            /* gives key two items and other_key "10.0.0.9:1" */
	const char *file_items;      /* key's two items as config_get() shows them */
	const char *(*item)(unsigned i, char *buf, size_t n);
	unsigned max;
	const char *too_many;
};

static void check_list_flags_override_file(const struct list_case *lc)
{
	char err[CONFIG_ERR_MAX], want[VALUE_MAX], a[64], b[64];
	struct config *cfg = config_new();

	assert_non_null(cfg);
	assert_int_equal(config_load_buffer(cfg, "t.yaml", lc->file, strlen(lc->file), err,
					    sizeof(err)), 0);
	assert_get(cfg, lc->key, lc->file_items);
	/* The first flag replaces the file's list; later flags add to it. */
	assert_set_ok(cfg, lc->key, lc->item(0, a, sizeof(a)));
	assert_get(cfg, lc->key, a);
	assert_set_ok(cfg, lc->key, lc->item(1, b, sizeof(b)));
	snprintf(want, sizeof(want), "%s, %s", a, b);
	assert_get(cfg, lc->key, want);
	/* The other list is untouched, and its first flag still replaces its file value. */
	assert_get(cfg, lc->other_key, "10.0.0.9:1");
	assert_false(list_from_flag(cfg, lc->other_key));
	assert_set_ok(cfg, lc->other_key, "10.0.0.8:1");
	assert_get(cfg, lc->other_key, "10.0.0.8:1");
	assert_get(cfg, lc->key, want);
	/* A bad first flag must not have cleared the list. */
	struct config *other = config_new();

	assert_non_null(other);
	assert_int_equal(config_load_buffer(other, "t.yaml", lc->file, strlen(lc->file), err,
					    sizeof(err)), 0);
	assert_int_equal(config_set(other, lc->key, "bogus", err, sizeof(err)), -1);
	assert_get(other, lc->key, lc->file_items);
	config_unref(other);

	for (unsigned i = 2; i < lc->max; i++)
		assert_set_ok(cfg, lc->key, lc->item(i, a, sizeof(a)));
	assert_int_equal(list_count(cfg, lc->key), lc->max);
	snprintf(want, sizeof(want), "%s: %s", lc->key, lc->too_many);
	assert_set_err(cfg, lc->key, lc->item(lc->max, a, sizeof(a)), want);
	assert_int_equal(list_count(cfg, lc->key), lc->max);
	/* Loading the file again (a reload) makes the file's lists current again. */
	assert_int_equal(config_load_buffer(cfg, "t.yaml", lc->file, strlen(lc->file), err,
					    sizeof(err)), 0);
	assert_get(cfg, lc->key, lc->file_items);
	assert_get(cfg, lc->other_key, "10.0.0.9:1");
	assert_false(list_from_flag(cfg, lc->key));
	assert_false(list_from_flag(cfg, lc->other_key));
	config_unref(cfg);
}

static void test_list_flags_override_file(void **state)
{
	static const struct list_case cases[] = {
		{"listen", "tproxy_listen",
		 "listen:\n  - 10.0.0.1:6432\n  - 10.0.0.2:6432\ntproxy_listen: 10.0.0.9:1\n",
		 "10.0.0.1:6432, 10.0.0.2:6432", addr_item, CONFIG_MAX_LISTEN, "more than 8 addresses"},
		{"tproxy_listen", "listen",
		 "tproxy_listen:\n  - 10.0.0.1:6432\n  - 10.0.0.2:6432\nlisten: 10.0.0.9:1\n",
		 "10.0.0.1:6432, 10.0.0.2:6432", addr_item, CONFIG_MAX_LISTEN, "more than 8 addresses"},
		/* A list inside a group. */
		{"gate.deny", "listen",
		 "gate:\n  queue: 1\n  deny:\n    - 192.0.2.0/24\n    - 198.51.100.7\nlisten: 10.0.0.9:1\n",
		 "192.0.2.0/24, 198.51.100.7/32", range_item, CONFIG_GATE_MAX_DENY,
		 "more than 64 ranges"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_list_flags_override_file(&cases[i]);
}

/* ---- value parsers ------------------------------------------------------------------ */

struct parse_case {
	const char *text;
	int rc;
	uint64_t value;
};

/* Each case's result from parse; on an error the output must be left alone. */
static void run_parse_cases(int (*parse)(const char *, uint64_t *), const struct parse_case *cases,
			    size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = 12345;
		int rc = parse(cases[i].text, &v);

		if (rc != cases[i].rc)
			fail_msg("\"%s\": rc %d, want %d", cases[i].text, rc, cases[i].rc);
		if (rc == 0 && v != cases[i].value)
			fail_msg("\"%s\": %llu, want %llu", cases[i].text, (unsigned long long)v,
				 (unsigned long long)cases[i].value);
		if (rc != 0 && v != 12345)
			fail_msg("\"%s\": output written on error", cases[i].text);
	}
}

static void test_parse_duration(void **state)
{
	static const struct parse_case cases[] = {
		{"0", 0, 0},
		{"30", 0, 30000},
		{"30s", 0, 30000},
		{"500ms", 0, 500},
		{"2m", 0, 120000},
		{"1h", 0, 3600000},
		{"007s", 0, 7000},
		{"0ms", 0, 0},
		{"18446744073709551615ms", 0, UINT64_MAX},
		{"18446744073709551616ms", -ERANGE, 0},
		{"18446744073709551s", 0, 18446744073709551000ULL},
		{"18446744073709552s", -ERANGE, 0},
		{"5124095576030h", 0, 5124095576030ULL * 3600000},
		{"5124095576031h", -ERANGE, 0},
		{"99999999999999999999999h", -ERANGE, 0},
		{"99999999999999999999999x", -EINVAL, 0}, /* the bad unit is the better report */
		{"", -EINVAL, 0},
		{"s", -EINVAL, 0},
		{"10x", -EINVAL, 0},
		{" 5s", -EINVAL, 0},
		{"5s ", -EINVAL, 0},
		{"5 s", -EINVAL, 0},
		{"-5s", -EINVAL, 0},
		{"+5s", -EINVAL, 0},
		{"1.5s", -EINVAL, 0},
		{"5S", -EINVAL, 0},
		{"5sec", -EINVAL, 0},
		{"5min", -EINVAL, 0},
		{"1d", -EINVAL, 0},
		{"0x10", -EINVAL, 0},
		{"1h30m", -EINVAL, 0},
	};

	run_parse_cases(config_parse_duration, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_parse_size(void **state)
{
	static const struct parse_case cases[] = {
		{"0", 0, 0},
		{"4096", 0, 4096},
		{"4096B", 0, 4096},
		{"32KiB", 0, 32768},
		{"1MiB", 0, 1048576},
		{"1GiB", 0, 1073741824},
		{"17179869183GiB", 0, 17179869183ULL << 30},
		{"17179869184GiB", -ERANGE, 0},
		{"18446744073709551615", 0, UINT64_MAX},
		{"18446744073709551616", -ERANGE, 0},
		{"", -EINVAL, 0},
		{"KiB", -EINVAL, 0},
		{"32kb", -EINVAL, 0},
		{"32KB", -EINVAL, 0},
		{"32K", -EINVAL, 0},
		{"32kib", -EINVAL, 0},
		{"1TiB", -EINVAL, 0},
		{" 32KiB", -EINVAL, 0},
		{"32 KiB", -EINVAL, 0},
		{"-1", -EINVAL, 0},
		{"1.5MiB", -EINVAL, 0},
		{"1e6", -EINVAL, 0},
	};

	run_parse_cases(config_parse_size, cases, sizeof(cases) / sizeof(cases[0]));
}

/* tls.server.server_name's syntax, from data/config/server_names.txt. */
static void test_check_server_name(void **state)
{
	FILE *f = fopen(CASE_DIR "/server_names.txt", "r");
	char line[512];
	unsigned n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *bar = strchr(line, '|'), *in, *want;
		int rc;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		assert_non_null(bar);
		*bar = '\0';
		in = trim(line);
		want = trim(bar + 1);
		rc = config_check_server_name(in);
		if (strcmp(want, "ok") == 0 ? rc != 0 : rc != -EINVAL)
			fail_msg("\"%s\": rc %d, want %s", in, rc, want);
		n++;
	}
	fclose(f);
	assert_true(n >= 20);
	assert_int_equal(config_check_server_name(""), -EINVAL);
	/* 253 characters is the most a name may have. */
	char longest[300];

	memset(longest, 'a', sizeof(longest));
	for (size_t i = 63; i < 253; i += 64)
		longest[i] = '.';
	longest[253] = '\0';
	assert_int_equal(config_check_server_name(longest), 0);
	longest[253] = 'a';
	longest[254] = '\0';
	assert_int_equal(config_check_server_name(longest), -EINVAL);
}

static void test_parse_rate(void **state)
{
	static const struct parse_case cases[] = {
		{"0", 0, 0},
		{"10", 0, 36000},
		{"10/s", 0, 36000},
		{"30/m", 0, 1800},
		{"100/h", 0, 100},
		{"1/h", 0, 1},
		{"007/m", 0, 420},
		{"5124095576030431/s", 0, 5124095576030431ULL * 3600},
		{"5124095576030432/s", -ERANGE, 0},
		{"18446744073709551615/h", 0, UINT64_MAX},
		{"18446744073709551616/h", -ERANGE, 0},
		{"99999999999999999999999/x", -EINVAL, 0}, /* the bad unit is the better report */
		{"", -EINVAL, 0},
		{"/s", -EINVAL, 0},
		{"10/", -EINVAL, 0},
		{"10s", -EINVAL, 0},
		{"10/sec", -EINVAL, 0},
		{"10/d", -EINVAL, 0},
		{"10/S", -EINVAL, 0},
		{"10 /s", -EINVAL, 0},
		{"-1/s", -EINVAL, 0},
		{"0.5/s", -EINVAL, 0},
		{"1/2s", -EINVAL, 0},
	};

	run_parse_cases(config_parse_rate, cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- case files --------------------------------------------------------------------- */

/* Run one case; returns the number of mismatches, each printed. */
static int run_case(const char *yaml_name)
{
	char path[512], expect_path[512], err[CONFIG_ERR_MAX], err2[CONFIG_ERR_MAX];
	char *line = NULL;
	size_t cap = 0, len = 0, base_len = strlen(yaml_name) - strlen(".yaml");
	struct config *cfg = config_new(), *cfg2 = config_new();
	int failures = 0, load_rc, load_rc2, load_lines = 0, validate_lines = 0;
	FILE *expect;
	char *data, *before, *after;

	assert_non_null(cfg);
	assert_non_null(cfg2);
	snprintf(path, sizeof(path), CASE_DIR "/%s", yaml_name);
	snprintf(expect_path, sizeof(expect_path), CASE_DIR "/%.*s.expect", (int)base_len,
		 yaml_name);
	expect = fopen(expect_path, "r");
	if (!expect) {
		print_error("%s: no expectation file %s\n", yaml_name, expect_path);
		config_unref(cfg);
		config_unref(cfg2);
		return 1;
	}

	before = snapshot(cfg);
	err[0] = '\0';
	load_rc = config_load_file(cfg, path, err, sizeof(err));
	/* The in-memory entry point must agree with the file one. */
	data = read_whole(path, &len);
	assert_non_null(data);
	err2[0] = '\0';
	load_rc2 = config_load_buffer(cfg2, path, data, len, err2, sizeof(err2));
	free(data);
	if (load_rc != load_rc2 || strcmp(err, err2) != 0) {
		print_error("%s: file and buffer loads differ: \"%s\" vs \"%s\"\n", yaml_name, err,
			    err2);
		failures++;
	}
	if (load_rc != 0) {
		/* A failed load leaves no trace. */
		after = snapshot(cfg);
		if (strcmp(before, after) != 0) {
			print_error("%s: failed load changed the config\n", yaml_name);
			failures++;
		}
		free(after);
	}
	free(before);

	while (getline(&line, &cap, expect) > 0) {
		char *eq, got[VALUE_MAX];

		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		if (strncmp(line, "load: ", 6) == 0) {
			const char *want = line + 6;

			load_lines++;
			if (strcmp(want, "ok") == 0 && load_rc != 0) {
				print_error("%s: load failed: %s\n", yaml_name, err);
				failures++;
			} else if (strncmp(want, "error ", 6) == 0 &&
				   (load_rc == 0 || strcmp(err, want + 6) != 0)) {
				print_error("%s: load: got \"%s\"\n%*swant \"%s\"\n", yaml_name,
					    load_rc ? err : "ok", (int)strlen(yaml_name) + 2, "",
					    want + 6);
				failures++;
			} else if (strcmp(want, "ok") != 0 && strncmp(want, "error ", 6) != 0) {
				print_error("%s: bad load line \"%s\"\n", expect_path, line);
				failures++;
			}
		} else if (strncmp(line, "validate: ", 10) == 0) {
			const char *want = line + 10;
			int vrc;

			validate_lines++;
			if (load_rc != 0) {
				print_error("%s: validate expected after a failed load\n", yaml_name);
				failures++;
				continue;
			}
			err[0] = '\0';
			vrc = config_validate(cfg, err, sizeof(err));
			if ((strcmp(want, "ok") == 0 && vrc != 0) ||
			    (strcmp(want, "ok") != 0 &&
			     (vrc == 0 || strncmp(want, "error ", 6) != 0 || strcmp(err, want + 6) != 0))) {
				print_error("%s: validate: got \"%s\", want \"%s\"\n", yaml_name,
					    vrc ? err : "ok", want);
				failures++;
			}
		} else if ((eq = strstr(line, " = ")) != NULL) {
			*eq = '\0';
			if (load_rc != 0) {
				print_error("%s: value checks after a failed load\n", yaml_name);
				failures++;
			} else if (config_get(cfg, line, got, sizeof(got)) != 0) {
				print_error("%s: unknown key %s\n", expect_path, line);
				failures++;
			} else if (strcmp(got, eq + 3) != 0) {
				print_error("%s: %s: got \"%s\", want \"%s\"\n", yaml_name, line, got,
					    eq + 3);
				failures++;
			}
		} else {
			print_error("%s: cannot read line \"%s\"\n", expect_path, line);
			failures++;
		}
	}
	free(line);
	fclose(expect);
	if (load_lines != 1 || (load_rc == 0 && validate_lines != 1)) {
		print_error("%s: needs one load line, and one validate line when the load is ok\n",
			    expect_path);
		failures++;
	}
	config_unref(cfg);
	config_unref(cfg2);
	return failures;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_case_files(void **state)
{
	DIR *dir = opendir(CASE_DIR);
	struct dirent *de;
	char *names[512];
	size_t n = 0;
	int failures = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0) {
			assert_true(n < sizeof(names) / sizeof(names[0]));
			names[n] = strdup(de->d_name);
			assert_non_null(names[n]);
			n++;
		}
	}
	closedir(dir);
	qsort(names, n, sizeof(names[0]), cmp_names);
	assert_true(n >= 40); /* the directory is where it should be, and populated */
	for (size_t i = 0; i < n; i++) {
		failures += run_case(names[i]);
		free(names[i]);
	}
	if (failures)
		fail_msg("%d case file mismatches", failures);
}

/* ---- file-level errors -------------------------------------------------------------- */

/* A temporary file holding len bytes of fill, with a newline every 64 bytes. */
static void make_file(char *path, size_t pathlen, size_t len, char fill)
{
	FILE *f;

	snprintf(path, pathlen, "/tmp/test_config_XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	for (size_t i = 0; i < len; i++)
		fputc(i % 64 == 63 ? '\n' : fill, f);
	assert_int_equal(fclose(f), 0);
}

static void test_file_errors(void **state)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX], path[64], want[CONFIG_ERR_MAX];

	assert_non_null(cfg);
	assert_int_equal(config_load_file(cfg, "data/config/no-such-file.yaml", err, sizeof(err)), -1);
	assert_string_equal(err, "data/config/no-such-file.yaml: No such file or directory");
	assert_int_equal(config_load_file(cfg, "data/config", err, sizeof(err)), -1);
	assert_string_equal(err, "data/config: is a directory");

	/* Exactly the cap is read (and here is all comment, so empty); one byte more is not. */
	make_file(path, sizeof(path), CONFIG_MAX_FILE_SIZE, '#');
	assert_int_equal(config_load_file(cfg, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: file is empty (no settings)", path);
	assert_string_equal(err, want);
	unlink(path);
	make_file(path, sizeof(path), CONFIG_MAX_FILE_SIZE + 1, '#');
	assert_int_equal(config_load_file(cfg, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: larger than 1 MiB, the limit for a config file", path);
	assert_string_equal(err, want);
	unlink(path);

	/* A stream that does not report its size is capped while reading. */
	if (access("/dev/zero", R_OK) == 0) {
		assert_int_equal(config_load_file(cfg, "/dev/zero", err, sizeof(err)), -1);
		assert_string_equal(err, "/dev/zero: larger than 1 MiB, the limit for a config file");
	}

	/* The buffer entry point has the same cap. */
	char *big = malloc(CONFIG_MAX_FILE_SIZE + 1);

	assert_non_null(big);
	memset(big, '#', CONFIG_MAX_FILE_SIZE + 1);
	assert_int_equal(config_load_buffer(cfg, "big", big, CONFIG_MAX_FILE_SIZE + 1, err,
					    sizeof(err)), -1);
	assert_string_equal(err, "big: larger than 1 MiB, the limit for a config file");
	free(big);
	config_unref(cfg);
}

static void test_failed_load_leaves_config_unchanged(void **state)
{
	/* Every kind of value is set before the error on the last line. */
	static const char file[] = "listen: 10.1.1.1:1\n"
				   "upstream: 10.1.1.1:2\n"
				   "workers: 7\n"
				   "buffer_size: 8KiB\n"
				   "timeouts: {startup: 5s, drain: 1s}\n"
				   "log_level: warn\n"
				   "admin_socket: /x.sock\n"
				   "metrics_listen: 127.0.0.1:1\n"
				   "tproxy_listen: [10.1.1.1:3, 10.1.1.1:4]\n"
				   "transparent_source: off\n"
				   "steer_instance: other\n"
				   "gate: {queue: 3, rate: 1/m, burst: 2, max_sources: 99,\n"
				   "       deny: [10.0.0.0/8]}\n"
				   "max_connections: 0\n";
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX], *before, *after;

	assert_non_null(cfg);
	assert_set_ok(cfg, "listen", "127.0.0.1:6432");
	assert_set_ok(cfg, "metrics_listen", "127.0.0.1:9187");
	assert_set_ok(cfg, "tproxy_listen", "0.0.0.0:6433");
	assert_set_ok(cfg, "gate.deny", "192.0.2.0/24");
	before = snapshot(cfg);
	assert_int_equal(config_load_buffer(cfg, "t.yaml", file, strlen(file), err, sizeof(err)), -1);
	assert_string_equal(err, "t.yaml:14: max_connections: \"0\" is out of range (1 to 1000000)");
	after = snapshot(cfg);
	assert_string_equal(before, after);
	assert_true(cfg->listen_from_flag);
	assert_true(cfg->tproxy_listen_from_flag);
	assert_true(cfg->gate_deny_from_flag);
	free(before);
	free(after);
	config_unref(cfg);
}

/* ---- cross-field checks ------------------------------------------------------------- */

static void test_validate(void **state)
{
	static const struct {
		const char *settings[6][2];
		const char *want; /* NULL: valid */
	} cases[] = {
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}}, NULL},
		{{{"upstream", "127.0.0.1:5432"}}, "listen: at least one listen address is required"},
		{{{"listen", "127.0.0.1:6432"}}, "upstream: an upstream address is required"},
		{{{"listen", "127.0.0.1:6432"}, {"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}},
		 "listen: 127.0.0.1:6432 is listed twice"},
		{{{"listen", "127.0.0.1:5432"}, {"upstream", "127.0.0.1:5432"}},
		 "upstream: 127.0.0.1:5432 is also a listen address; the relay would connect to itself"},
		{{{"listen", "*:5432"}, {"upstream", "10.0.0.5:5432"}},
		 "upstream: 10.0.0.5:5432 is also a listen address; the relay would connect to itself"},
		{{{"listen", "[::]:5432"}, {"upstream", "[::1]:5432"}},
		 "upstream: [::1]:5432 is also a listen address; the relay would connect to itself"},
		/* Same port, different host or family: fine. */
		{{{"listen", "127.0.0.2:5432"}, {"listen", "[::]:5432"}, {"upstream", "127.0.0.1:5432"}}, NULL},
		{{{"listen", "*:6432"}, {"upstream", "127.0.0.1:5432"}, {"buffer_size", "64KiB"},
		  {"max_message_size", "32KiB"}},
		 "max_message_size: 32KiB is smaller than buffer_size (64KiB)"},
		{{{"listen", "*:6432"}, {"upstream", "127.0.0.1:5432"}, {"buffer_size", "64KiB"},
		  {"max_message_size", "64KiB"}},
		 NULL},
		{{{"listen", "*:6432"}, {"upstream", "127.0.0.1:5432"}, {"metrics_listen", "127.0.0.1:6432"}},
		 "metrics_listen: 127.0.0.1:6432 is also a listen address"},
		{{{"listen", "[::]:6432"}, {"upstream", "127.0.0.1:5432"}, {"metrics_listen", "[::1]:6432"}},
		 "metrics_listen: [::1]:6432 is also a listen address"},
		{{{"listen", "[::]:6432"}, {"upstream", "127.0.0.1:5432"}, {"metrics_listen", "127.0.0.2:6432"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"metrics_listen", "127.0.0.1:9187"}},
		 NULL},
		/* tproxy_listen: its own addresses, not a listen address, not the upstream. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "0.0.0.0:6433"},
		  {"tproxy_listen", "[::]:6433"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "127.0.0.1:6432"}},
		 "tproxy_listen: 127.0.0.1:6432 is also a listen address"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "*:6432"}},
		 "tproxy_listen: 0.0.0.0:6432 is also a listen address"},
		{{{"listen", "[::]:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "[::1]:6432"}},
		 "tproxy_listen: [::1]:6432 is also a listen address"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "127.0.0.1:6433"},
		  {"tproxy_listen", "127.0.0.1:6433"}},
		 "tproxy_listen: 127.0.0.1:6433 is listed twice"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "127.0.0.1:5432"}},
		 "upstream: 127.0.0.1:5432 is also a tproxy_listen address; the relay would connect to itself"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "10.0.0.5:5432"}, {"tproxy_listen", "*:5432"}},
		 "upstream: 10.0.0.5:5432 is also a tproxy_listen address; the relay would connect to itself"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "*:9187"},
		  {"metrics_listen", "127.0.0.1:9187"}},
		 "metrics_listen: 127.0.0.1:9187 is also a tproxy_listen address"},
		/* Same port as a listen address on another host: fine. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"tproxy_listen", "10.0.0.1:6432"}},
		 NULL},
		/* The Unix listener: its upstream only with it, never itself or the admin socket. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"unix_listen", "/run/pgw/.s.PGSQL.5432"}, {"unix_upstream", "/run/postgresql/.s.PGSQL.5432"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"unix_upstream", "/run/postgresql/.s.PGSQL.5432"}},
		 "unix_upstream: set, but unix_listen is not (only clients of the relay's Unix listener go to unix_upstream)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"unix_listen", "/run/pg/.s.PGSQL.5432"}, {"unix_upstream", "/run/pg/.s.PGSQL.5432"}},
		 "unix_upstream: /run/pg/.s.PGSQL.5432 is also unix_listen; the relay would connect to itself"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"unix_listen", "/run/a.sock"}, {"admin_socket", "/run/a.sock"}},
		 "unix_listen: /run/a.sock is also admin_socket"},
		/* The audit trail: signed or not at all; its companions only with it. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"audit.path", "/var/log/a.jsonl"}, {"audit.signing_key", "/etc/a.key"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"audit.path", "/var/log/a.jsonl"}},
		 "audit.signing_key: required with audit.path (checkpoints are signed; pgwardenctl audit keygen makes a key pair)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"audit.path", "/var/log/a"}, {"audit.signing_key", "/var/log/a"}},
		 "audit.signing_key: /var/log/a is also audit.path"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"audit.signing_key", "/etc/a.key"}},
		 "audit.signing_key: set, but audit.path is not (no audit trail)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"audit.syslog_address", "127.0.0.1:514"}},
		 "audit.syslog_address: set, but audit.path is not (no audit trail)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"audit.group", "adm"}},
		 "audit.group: set, but audit.path is not (no audit trail)"},
		/* The admission gate: limits need the queue, a rate needs a burst and the other
		 * way round, no range twice. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"},
		  {"gate.rate", "10/s"}, {"gate.burst", "5"}, {"gate.deny", "10.0.0.0/8"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.max_sources", "128"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.rate", "10/s"},
		  {"gate.burst", "5"}},
		 "gate.rate: the admission gate is off; set gate.queue to the queue of pgwardenctl attach --gate-queue"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.deny", "10.0.0.0/8"},
		  {"gate.queue", "off"}},
		 "gate.deny: the admission gate is off; set gate.queue to the queue of pgwardenctl attach --gate-queue"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"},
		  {"gate.rate", "1/h"}},
		 "gate.burst: required with gate.rate (how many new connections a source may make at once)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"},
		  {"gate.burst", "3"}},
		 "gate.burst: set without gate.rate (a burst limits nothing alone)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"},
		  {"gate.deny", "fd00::/8"}, {"gate.deny", "10.0.0.0/8"}, {"gate.deny", "fd00::/8"}},
		 "gate.deny: fd00::/8 is listed twice"},
		/* An IPv4 range and its IPv4-mapped IPv6 spelling are one range. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"}, {"gate.queue", "1"},
		  {"gate.deny", "10.0.0.0/8"}, {"gate.deny", "::ffff:10.0.0.0/104"}},
		 "gate.deny: ::ffff:10.0.0.0/104 is listed twice"},
		/* The periodic catalog refresh: off, or at most once a second. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"mask.catalog_refresh", "0"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"mask.catalog_refresh", "1s"}},
		 NULL},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"mask.catalog_refresh", "500ms"}},
		 "mask.catalog_refresh: 500ms is below 1s (0 turns the periodic refresh off)"},
		/* Kept servers only where pgwarden logged in upstream itself. */
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"server_reuse.max_idle", "8"}},
		 "server_reuse.max_idle: only with auth.mode: terminate (in passthrough the server "
		 "authenticates each client: its backend is that client's)"},
		{{{"listen", "127.0.0.1:6432"}, {"upstream", "127.0.0.1:5432"},
		  {"auth.mode", "terminate"}, {"auth.users_file", "/etc/u"},
		  {"server_reuse.max_idle", "8"}},
		 NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = config_new();
		char err[CONFIG_ERR_MAX] = "";
		int rc;

		assert_non_null(cfg);
		for (size_t k = 0; k < 6 && cases[i].settings[k][0]; k++)
			assert_set_ok(cfg, cases[i].settings[k][0], cases[i].settings[k][1]);
		rc = config_validate(cfg, err, sizeof(err));
		if (!cases[i].want && rc != 0)
			fail_msg("case %zu: %s", i, err);
		if (cases[i].want && (rc == 0 || strcmp(err, cases[i].want) != 0))
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, rc ? err : "ok", cases[i].want);
		config_unref(cfg);
	}
}

/* ---- output, reload, lifetime ------------------------------------------------------- */

static char *write_to_string(const struct config *cfg, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);

	assert_non_null(f);
	assert_int_equal(config_write_yaml(cfg, f), 0);
	assert_int_equal(fclose(f), 0);
	return text;
}

static void test_write_reads_back(void **state)
{
	struct config *cfg = config_new(), *back = config_new();
	char err[CONFIG_ERR_MAX], *text, *a, *b;
	size_t len;

	assert_non_null(cfg);
	assert_non_null(back);
	/* Defaults (no listen, no upstream) read back as defaults. */
	text = write_to_string(cfg, &len);
	assert_int_equal(config_load_buffer(back, "written", text, len, err, sizeof(err)), 0);
	a = snapshot(cfg);
	b = snapshot(back);
	assert_string_equal(a, b);
	free(text);
	free(a);
	free(b);

	/* Every key away from its default, including a path that needs YAML quoting. */
	assert_set_ok(cfg, "listen", "127.0.0.1:6432");
	assert_set_ok(cfg, "listen", "[::1]:6432");
	assert_set_ok(cfg, "listen", "*:7432");
	assert_set_ok(cfg, "upstream", "[fe80::1]:5432");
	assert_set_ok(cfg, "workers", "3");
	assert_set_ok(cfg, "buffer_size", "12345");
	assert_set_ok(cfg, "max_message_size", "512MiB");
	assert_set_ok(cfg, "max_connections", "77");
	assert_set_ok(cfg, "timeouts.startup", "90s");
	assert_set_ok(cfg, "timeouts.message", "2500ms");
	assert_set_ok(cfg, "timeouts.connect", "1m");
	assert_set_ok(cfg, "timeouts.drain", "0");
	assert_set_ok(cfg, "log_level", "warn");
	assert_set_ok(cfg, "admin_socket", "/run/pgw \"a\\b\": #x/é.sock");
	assert_set_ok(cfg, "metrics_listen", "[::1]:9187");
	assert_set_ok(cfg, "tproxy_listen", "0.0.0.0:6433");
	assert_set_ok(cfg, "tproxy_listen", "[::]:6433");
	assert_set_ok(cfg, "transparent_source", "off");
	assert_set_ok(cfg, "steer_instance", "null"); /* must be written quoted to read back */
	assert_set_ok(cfg, "gate.queue", "0");
	assert_set_ok(cfg, "gate.rate", "90/h");
	assert_set_ok(cfg, "gate.burst", "3");
	assert_set_ok(cfg, "gate.max_sources", "100");
	assert_set_ok(cfg, "gate.deny", "10.0.0.0/8");
	assert_set_ok(cfg, "gate.deny", "::/0");
	/* TLS: nested two deep, the longest path a file setting takes, a quoted-looking text. */
	char longest[CONFIG_LONGEST_FILE + 1];

	memset(longest, 'k', sizeof(longest));
	longest[0] = '/';
	longest[CONFIG_LONGEST_FILE] = '\0';
	assert_set_ok(cfg, "tls.client.mode", "require");
	assert_set_ok(cfg, "tls.client.cert_file", "/etc/ssl/\"pg\" #1.pem");
	assert_set_ok(cfg, "tls.client.key_file", longest);
	assert_set_ok(cfg, "tls.server.mode", "verify-full");
	assert_set_ok(cfg, "tls.server.server_name", "10.0.0.5");
	assert_set_ok(cfg, "tls.min_version", "TLSv1.3");
	assert_set_ok(cfg, "tls.ciphers", "ECDHE+AESGCM:!AES128");
	assert_set_ok(cfg, "tls.fips", "true");
	assert_set_ok(cfg, "audit.path", "/var/log/pgwarden/audit.jsonl");
	assert_set_ok(cfg, "audit.fsync", "none");
	assert_set_ok(cfg, "audit.checkpoint.records", "77");
	assert_set_ok(cfg, "audit.checkpoint.interval", "5m");
	assert_set_ok(cfg, "audit.group", "null");
	text = write_to_string(cfg, &len);
	assert_int_equal(config_load_buffer(back, "written", text, len, err, sizeof(err)), 0);
	a = snapshot(cfg);
	b = snapshot(back);
	assert_string_equal(a, b);
	assert_non_null(strstr(text, "timeouts:\n  startup: 90s\n"));
	assert_non_null(strstr(text, "tproxy_listen:\n  - \"0.0.0.0:6433\"\n  - \"[::]:6433\"\n"));
	assert_non_null(strstr(text, "transparent_source: false\n"));
	assert_non_null(strstr(text, "steer_instance: \"null\"\n"));
	assert_non_null(strstr(text, "gate:\n  queue: 0\n  rate: 90/h\n  burst: 3\n  max_sources: 100\n"
				     "  deny:\n    - \"10.0.0.0/8\"\n    - \"::/0\"\n"));
	assert_non_null(strstr(text, "tls:\n  client:\n    mode: require\n    cert_file: "
				     "\"/etc/ssl/\\\"pg\\\" #1.pem\"\n"));
	assert_non_null(strstr(text, "  server:\n    mode: verify-full\n"));
	assert_non_null(strstr(text, "\n  min_version: TLSv1.3\n"));
	assert_string_equal(back->tls_client_key_file, longest);
	assert_true(back->tls_fips);
	/* A group inside a group is indented under its parent; the parent goes on after it. */
	assert_non_null(strstr(text, "audit:\n  path: \"/var/log/pgwarden/audit.jsonl\"\n"));
	assert_non_null(strstr(text, "\n  fsync: none\n"));
	assert_non_null(strstr(text, "\n  checkpoint:\n    records: 77\n    interval: 5m\n"));
	assert_non_null(strstr(text, "\n  group: \"null\"\n"));
	assert_true(back->gate_enabled);
	assert_int_equal(back->ngate_deny, 2);
	assert_false(back->transparent_source);
	assert_int_equal(back->ntproxy_listen, 2);
	assert_false(back->tproxy_listen_from_flag);
	free(text);
	free(a);
	free(b);
	config_unref(cfg);
	config_unref(back);
}

static void test_usage_lists_every_flag(void **state)
{
	char *text = NULL, flag[80], name[64];
	size_t len;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	config_usage(f);
	assert_int_equal(fclose(f), 0);
	for (size_t i = 0; config_keys[i]; i++) {
		assert_non_null(config_flag_name(config_keys[i], name, sizeof(name)));
		snprintf(flag, sizeof(flag), "  --%s ", name);
		if (!strstr(text, flag))
			fail_msg("--help lacks %s", flag);
	}
	assert_non_null(strstr(text, "--timeouts-startup DURATION"));
	assert_non_null(strstr(text, "(default: 32KiB)"));
	free(text);
}

static void test_restart_required(void **state)
{
	static const struct {
		const char *key, *value;
		bool restart;
	} cases[] = {
		{"listen", "127.0.0.1:7000", true},
		{"workers", "2", true},
		{"pin_workers", "false", true},
		{"admin_socket", "/tmp/other.sock", true},
		{"metrics_listen", "127.0.0.1:9187", true},
		{"upstream", "127.0.0.1:5433", false},
		{"buffer_size", "64KiB", true},
		{"max_message_size", "1MiB", false},
		{"max_connections", "5", false},
		{"session.max_pipeline", "64", false},
		{"session.max_prepared_statements", "5", false},
		{"session.max_prepared_bytes", "4KiB", false},
		{"timeouts.startup", "5s", false},
		{"timeouts.message", "5s", false},
		{"timeouts.connect", "5s", false},
		{"timeouts.drain", "5s", false},
		{"log_level", "debug", false},
		{"tproxy_listen", "0.0.0.0:6433", true},
		{"transparent_source", "false", false},
		{"steer_instance", "other", true},
		{"unix_listen", "/run/pgwarden/.s.PGSQL.5432", true},
		{"unix_upstream", "/var/run/postgresql/.s.PGSQL.5432", false},
		{"gate.queue", "4243", true},
		{"gate.rate", "10/s", false},
		{"gate.burst", "5", false},
		{"gate.max_sources", "128", true},
		{"gate.deny", "10.0.0.0/8", false},
		{"tls.client.mode", "prefer", false},
		{"tls.client.cert_file", "/a.pem", false},
		{"tls.client.key_file", "/a.key", false},
		{"tls.client.ca_file", "/ca.pem", false},
		{"tls.client.crl_file", "/ca.crl", false},
		{"tls.client.verify", "required", false},
		{"tls.server.mode", "verify-full", false},
		{"tls.server.ca_file", "/sca.pem", false},
		{"tls.server.crl_file", "/sca.crl", false},
		{"tls.server.cert_file", "/c.pem", false},
		{"tls.server.key_file", "/c.key", false},
		{"tls.server.server_name", "db.example.com", false},
		{"tls.min_version", "TLSv1.3", false},
		{"tls.ciphers", "ECDHE+AESGCM", false},
		{"tls.ciphersuites", "TLS_AES_128_GCM_SHA256", false},
		{"tls.groups", "P-256", false},
		{"tls.session_tickets", "true", false},
		{"tls.fips", "true", true},
		{"auth.mode", "terminate", false},
		{"auth.server_methods", "scram-sha-256", false},
		{"auth.users_file", "/etc/u", false},
		{"auth.upstream_passwords", "/etc/p", false},
		{"auth.cert_map", "/etc/m", false},
		{"auth.cert_map_name", "other", false},
		{"auth.require_cert_and_password", "true", false},
		{"auth.mock_secret_file", "/etc/s", false},
		{"auth.lockout.failures", "3", false},
		{"auth.lockout.window", "1m", false},
		{"auth.lockout.duration", "1h", false},
		{"auth.lockout.max_entries", "100", false},
		{"server_reuse.max_idle", "8", false},
		{"server_reuse.idle_timeout", "5m", false},
		{"server_reuse.lifetime", "30m", false},
		{"audit.path", "/var/log/audit.jsonl", true},
		{"audit.signing_key", "/etc/pgwarden/audit.key", true},
		{"audit.fsync", "always", true},
		{"audit.batch_window", "1ms", true},
		{"audit.queue_size", "1MiB", true},
		{"audit.write_timeout", "1s", true},
		{"audit.on_failure", "continue", true},
		{"audit.parameters", "true", true},
		{"audit.literals", "true", true},
		{"audit.max_text", "1KiB", true},
		{"audit.rotate_size", "1MiB", true},
		{"audit.rotate_interval", "1h", true},
		{"audit.checkpoint.records", "10", true},
		{"audit.checkpoint.interval", "10s", true},
		{"audit.disk_warn", "50", true},
		{"audit.group", "adm", true},
		{"audit.syslog_socket", "/dev/log", true},
		{"audit.syslog_address", "127.0.0.1:514", true},
		{"policy", "/etc/pgwarden/policy.yaml", false},
		{"mask.key_file", "/etc/pgwarden/mask.key", false},
		{"mask.row_lookahead", "1MiB", false},
		{"mask.catalog_user", "reader", false},
		{"mask.catalog_database", "app", false},
		{"mask.catalog_passwords", "/etc/pgwarden/catalog.txt", false},
		{"mask.catalog_timeout", "3s", false},
		{"mask.catalog_refresh", "10s", false},
		{"admission.prelogin_max", "10", false},
		{"admission.prelogin_per_source", "5", false},
		{"admission.rate", "10/s", false},
		{"admission.burst", "5", false},
		{"admission.max_sources", "128", true},
		{"log_target", "syslog", true},
		{"admin_read_group", "adm", true},
		{"restart_drain", "5m", false},
	};
	struct config *old = config_new();

	assert_non_null(old);
	assert_set_ok(old, "listen", "127.0.0.1:6432");
	assert_set_ok(old, "upstream", "127.0.0.1:5432");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = config_new();
		const char *why;

		assert_non_null(cfg);
		assert_set_ok(cfg, "listen", "127.0.0.1:6432");
		assert_set_ok(cfg, "upstream", "127.0.0.1:5432");
		assert_null(config_restart_required(old, cfg));
		assert_set_ok(cfg, cases[i].key, cases[i].value);
		why = config_restart_required(old, cfg);
		if (cases[i].restart)
			assert_string_equal(why, cases[i].key);
		else
			assert_null(why);
		config_unref(cfg);
	}
	assert_int_equal(sizeof(cases) / sizeof(cases[0]), nkeys());
	config_unref(old);
}

static void test_refcount(void **state)
{
	struct config *cfg = config_new();

	assert_non_null(cfg);
	assert_set_ok(cfg, "metrics_listen", "127.0.0.1:9187"); /* owned strings to free */
	assert_set_ok(cfg, "steer_instance", "other");
	assert_set_ok(cfg, "gate.deny", "10.0.0.0/8");
	config_ref(cfg);
	config_ref(cfg);
	assert_int_equal(__atomic_load_n(&cfg->refcount, __ATOMIC_RELAXED), 3);
	config_unref(cfg);
	config_unref(cfg);
	assert_int_equal(__atomic_load_n(&cfg->refcount, __ATOMIC_RELAXED), 1);
	config_unref(cfg); /* freed here: LeakSanitizer checks nothing is left */
	config_unref(NULL);
}

static void test_get_errors(void **state)
{
	struct config *cfg = config_new();
	char small[4];

	assert_non_null(cfg);
	assert_int_equal(config_get(cfg, "nope", small, sizeof(small)), -ENOENT);
	assert_int_equal(config_get(cfg, "admin_socket", small, sizeof(small)), -ENOSPC);
	assert_int_equal(config_get(cfg, "buffer_size", small, sizeof(small)), -ENOSPC);
	assert_int_equal(config_get(cfg, "steer_instance", small, sizeof(small)), -ENOSPC);
	assert_int_equal(config_get(cfg, "transparent_source", small, sizeof(small)), -ENOSPC);
	assert_set_ok(cfg, "tproxy_listen", "127.0.0.1:6433");
	assert_int_equal(config_get(cfg, "tproxy_listen", small, sizeof(small)), -ENOSPC);
	assert_int_equal(config_get(cfg, "gate.rate", small, sizeof(small)), 0);
	assert_string_equal(small, "0/s");
	assert_set_ok(cfg, "gate.queue", "1234");
	assert_int_equal(config_get(cfg, "gate.queue", small, sizeof(small)), -ENOSPC);
	assert_set_ok(cfg, "gate.deny", "10.0.0.0/8");
	assert_int_equal(config_get(cfg, "gate.deny", small, sizeof(small)), -ENOSPC);
	assert_int_equal(config_get(cfg, "workers", small, sizeof(small)), 0);
	assert_string_equal(small, "0");
	config_unref(cfg);
}

/* ---- the shipped example and docs --------------------------------------------------- */

static void test_example_config_is_valid(void **state)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX];

	assert_non_null(cfg);
	if (config_load_file(cfg, "../../etc/pgwarden.yaml", err, sizeof(err)))
		fail_msg("%s", err);
	if (config_validate(cfg, err, sizeof(err)))
		fail_msg("etc/pgwarden.yaml: %s", err);
	config_unref(cfg);
	/* The strict example: valid, and as strict as it says. */
	cfg = config_new();
	assert_non_null(cfg);
	if (config_load_file(cfg, "../../etc/pgwarden-strict.yaml", err, sizeof(err)))
		fail_msg("%s", err);
	if (config_validate(cfg, err, sizeof(err)))
		fail_msg("etc/pgwarden-strict.yaml: %s", err);
	assert_int_equal(cfg->auth_server_methods, AUTH_METHOD_SCRAM | AUTH_METHOD_SCRAM_PLUS);
	assert_true(cfg->auth_lockout_failures > 0 && cfg->auth_lockout_failures <= 10);
	assert_true(cfg->auth_lockout_duration_ms >= 30 * 60 * 1000);
	config_unref(cfg);
}

/* Every key, its flag, and its default appear in docs/CONFIG.md and man/pgwardend.8, so
 * that adding a setting without documenting it fails here. */
/* The loader reads groups two deep (tls.client.mode) and the writer opens each group once:
 * a deeper key could only be set by a flag, and a group split in two would be written as
 * a duplicate key. */
static void test_keys_nest_and_group(void **state)
{
	for (size_t i = 0; config_keys[i]; i++) {
		const char *k = config_keys[i], *dot = strrchr(k, '.');
		size_t dots = 0;

		for (const char *p = k; *p; p++)
			dots += *p == '.';
		if (dots > 2)
			fail_msg("%s nests deeper than the loader reads", k);
		/* Once a later key leaves this key's group, no key after it may come back. */
		for (size_t j = i + 1; dot && config_keys[j]; j++) {
			if (strncmp(config_keys[j], k, (size_t)(dot - k) + 1) == 0)
				continue;
			for (size_t m = j + 1; config_keys[m]; m++)
				if (strncmp(config_keys[m], k, (size_t)(dot - k) + 1) == 0)
					fail_msg("%s is apart from its group (%.*s)", config_keys[m],
						 (int)(dot - k), k);
			break;
		}
	}
}

static void test_docs_cover_every_key(void **state)
{
	size_t mdlen, manlen;
	char *md = read_whole("../../docs/CONFIG.md", &mdlen);
	char *man = read_whole("../../man/pgwardend.8", &manlen);
	char *usage = NULL;
	size_t ulen;
	FILE *f;

	assert_non_null(md);
	assert_non_null(man);
	f = open_memstream(&usage, &ulen);
	assert_non_null(f);
	config_usage(f);
	assert_int_equal(fclose(f), 0);
	for (size_t i = 0; config_keys[i]; i++) {
		char flag[80], name[64], roff[160], want[100];
		const char *def;
		size_t o = 0;

		assert_non_null(config_flag_name(config_keys[i], name, sizeof(name)));
		snprintf(flag, sizeof(flag), "--%s", name);
		snprintf(want, sizeof(want), "`%s`", config_keys[i]);
		if (!strstr(md, want))
			fail_msg("docs/CONFIG.md does not document %s", want);
		if (!strstr(md, flag))
			fail_msg("docs/CONFIG.md does not mention %s", flag);
		/* roff spells each '-' of a flag as "\-". */
		for (const char *p = flag; *p && o + 3 < sizeof(roff); p++) {
			if (*p == '-')
				roff[o++] = '\\';
			roff[o++] = *p;
		}
		roff[o] = '\0';
		if (!strstr(man, roff))
			fail_msg("man/pgwardend.8 does not mention %s", roff);
		/* The default --help prints is the one the docs state. */
		snprintf(want, sizeof(want), "  --%s ", name);
		def = strstr(usage, want);
		assert_non_null(def);
		def = strstr(def, "(default: ");
		assert_non_null(def);
		def += strlen("(default: ");
		snprintf(want, sizeof(want), "%.*s", (int)strcspn(def, ")"), def);
		if (strcmp(want, "none") != 0 && strcmp(want, "off") != 0 && !strstr(md, want))
			fail_msg("docs/CONFIG.md does not state %s's default %s", config_keys[i], want);
	}
	free(md);
	free(man);
	free(usage);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_set_every_key),
		cmocka_unit_test(test_set_errors),
		cmocka_unit_test(test_flag_names),
		cmocka_unit_test(test_list_flags_override_file),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_rate),
		cmocka_unit_test(test_check_server_name),
		cmocka_unit_test(test_case_files),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_failed_load_leaves_config_unchanged),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_write_reads_back),
		cmocka_unit_test(test_usage_lists_every_flag),
		cmocka_unit_test(test_restart_required),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_get_errors),
		cmocka_unit_test(test_example_config_is_valid),
		cmocka_unit_test(test_keys_nest_and_group),
		cmocka_unit_test(test_docs_cover_every_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
