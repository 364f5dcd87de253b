/*
 * evidence_cmds: pgwardenctl evidence sign, verify and collect (docs/COMPLIANCE.md).
 *
 *   pgwardenctl evidence sign --key PRIVATE [--signature SIG] REPORT
 *   pgwardenctl evidence verify [--public-key K]... [--signature SIG] REPORT
 *   pgwardenctl evidence [collect] --out REPORT [--key PRIVATE] [--audit-public-key K]...
 *
 * sign and verify work on files only, so an assessor checks a copied report on their own
 * machine; the signing itself is userspace/evidence (audit_sign's keys, one
 * implementation). collect asks the running pgwardend what it enforces and checks what
 * can be checked without running tests, then writes a report in the same format as
 * `make evidence` and signs it.
 *
 * verify's exit status: 0 unchanged and signed by a given key, 1 changed, malformed or
 * signed by another key, 2 usage or an unreadable file, 4 unchanged under the key it
 * names but no --public-key was given to vouch for it.
 */
#include "ctl.h"

#include "audit/audit_sign.h"
#include "audit/audit_verify.h"
#include "base/sanitize.h"
#include "base/version.h"
#include "config/config.h"
#include "evidence/evidence.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define EVIDENCE_MAX_KEYS 16
/* Reports are a few hundred KiB; a bound keeps a hostile file from exhausting memory. */
#define EVIDENCE_REPORT_MAX (64u << 20)
#define AUDIT_FILES_MAX 4096

static const char evidence_usage[] =
	"usage: pgwardenctl evidence sign --key PRIVATE [--signature SIG] REPORT\n"
	"       pgwardenctl evidence verify [--public-key FILE]... [--signature SIG] REPORT\n"
	"       pgwardenctl evidence [collect] --out REPORT [--key PRIVATE]\n"
	"                           [--audit-public-key FILE]... [--audit-partial]\n"
	"\n"
	"sign writes REPORT.sig (or SIG): an Ed25519 signature of the report under an audit\n"
	"signing key (pgwardenctl audit keygen).\n"
	"verify checks that REPORT is unchanged since it was signed, and by which key.\n"
	"  --public-key FILE  a key the signature must verify under; repeat for several.\n"
	"                     Without it the verdict is at best 'not vouched for'.\n"
	"collect asks the running pgwardend what it enforces (TLS, FIPS, policy, audit trail,\n"
	"steering) and writes a signed report of what holds now.\n"
	"  --key PRIVATE            signing key (default: the daemon's audit.signing_key)\n"
	"  --audit-public-key FILE  key the audit trail must verify under (default: the\n"
	"                           public half of audit.signing_key)\n"
	"  --audit-partial          older audit files were archived: the trail may begin\n"
	"                           after seq 1\n"
	"Exit status: 0 ok, 1 failed (verify: changed or untrusted), 2 usage or unreadable\n"
	"file, 3 pgwardend unreachable, 4 verify: unchanged but not vouched for.\n";

/* The whole of a regular file, NUL-terminated, at most max bytes. 0 or -errno. */
static int read_file(const char *path, size_t max, char **data, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	size_t got = 0;

	*data = NULL;
	*len = 0;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		err = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out;
	}
	*data = malloc((size_t)st.st_size + 1);
	if (!*data) {
		err = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, *data + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EIO; /* shrank while read */
			goto out;
		}
		got += (size_t)r;
	}
	(*data)[got] = '\0';
	*len = got;
out:
	if (err) {
		free(*data);
		*data = NULL;
	}
	close(fd);
	return err;
}

/* Write text to path through a temporary file and rename: readers see the old file or
 * the whole new one. Mode 0644: reports and signatures are for assessors. */
static int write_file(const char *path, const char *text, size_t len)
{
	char tmp[4096];
	int fd, err = 0;
	size_t off = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			err = -errno;
			break;
		}
		off += (size_t)w;
	}
	if (!err && (fchmod(fd, 0644) || fsync(fd)))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

static const char *safe_path(const char *p, char *buf, size_t n)
{
	sanitize_str(buf, n, p, SANITIZE_TERMINAL, NULL);
	return buf;
}

/* REPORT.sig unless --signature named another file. */
static int sig_path_for(const char *report, const char *given, char *out, size_t n)
{
	if (given)
		return (size_t)snprintf(out, n, "%s", given) < n ? 0 : -ENAMETOOLONG;
	return (size_t)snprintf(out, n, "%s.sig", report) < n ? 0 : -ENAMETOOLONG;
}

/* Sign report[0, len) with the key at key_path into sig_path. A ctl_exit. */
static int sign_to(const char *key_path, const char *report, size_t len, const char *sig_path)
{
	EVP_PKEY *key = NULL;
	char err[512], safe[512], *text = NULL;
	int rc = CTL_EXIT_OK, e;

	if (audit_key_load_private(key_path, &key, err, sizeof(err)))
		return ctl_fail(CTL_EXIT_USAGE, "evidence: --key %s", err);
	if (evidence_sign(key, report, len, &text, err, sizeof(err))) {
		rc = ctl_fail(CTL_EXIT_FAIL, "evidence: cannot sign: %s", err);
		goto out;
	}
	e = write_file(sig_path, text, strlen(text));
	if (e)
		rc = ctl_fail(CTL_EXIT_FAIL, "evidence: cannot write %s: %s",
			      safe_path(sig_path, safe, sizeof(safe)), strerror(-e));
out:
	free(text);
	EVP_PKEY_free(key);
	return rc;
}

static int evidence_sign_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{"key", required_argument, NULL, 'k'},
		{"signature", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *key = NULL, *sig = NULL;
	char sig_path[4096], safe[512], err[512], *report;
	size_t len;
	int c, e, rc;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key = optarg;
			break;
		case 's':
			sig = optarg;
			break;
		case 'h':
			fputs(evidence_usage, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_fail(CTL_EXIT_USAGE, "evidence sign: unknown option \"%s\" (see "
							"pgwardenctl evidence --help)",
					argv[optind - 1]);
		}
	}
	if (!key || optind != argc - 1)
		return ctl_fail(CTL_EXIT_USAGE, "evidence sign: expected --key PRIVATE and one report");
	if (sig_path_for(argv[optind], sig, sig_path, sizeof(sig_path)))
		return ctl_fail(CTL_EXIT_USAGE, "evidence sign: path too long");
	e = read_file(argv[optind], EVIDENCE_REPORT_MAX, &report, &len);
	if (e)
		return ctl_fail(CTL_EXIT_USAGE, "evidence sign: %s: %s",
				safe_path(argv[optind], safe, sizeof(safe)), strerror(-e));
	if (evidence_report_check(report, len, err, sizeof(err))) {
		free(report);
		return ctl_fail(CTL_EXIT_FAIL, "evidence sign: %s: %s",
				safe_path(argv[optind], safe, sizeof(safe)), err);
	}
	rc = sign_to(key, report, len, sig_path);
	free(report);
	if (rc == CTL_EXIT_OK)
		printf("signed %s: %s\n", safe_path(argv[optind], safe, sizeof(safe)), sig_path);
	return rc;
}

static const char *verdict_word(enum evidence_verdict v)
{
	switch (v) {
	case EVIDENCE_VALID:
		return "OK";
	case EVIDENCE_INVALID:
		return "FAILED";
	case EVIDENCE_UNVOUCHED:
		return "NOT VOUCHED FOR";
	}
	return "?";
}

static int evidence_verify_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{"public-key", required_argument, NULL, 'k'},
		{"signature", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	EVP_PKEY *keys[EVIDENCE_MAX_KEYS];
	unsigned nkeys = 0;
	const char *sig = NULL;
	char sig_path[4096], safe[512], err[512], msg[512], key_id[AUDIT_KEY_ID_HEXLEN + 1];
	char *report = NULL, *sig_text = NULL;
	size_t len, sig_len;
	enum evidence_verdict v;
	int c, e, rc = CTL_EXIT_USAGE;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (nkeys == EVIDENCE_MAX_KEYS) {
				rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: at most %d --public-key",
					      EVIDENCE_MAX_KEYS);
				goto out;
			}
			if (audit_key_load_public(optarg, &keys[nkeys], err, sizeof(err))) {
				rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: --public-key %s", err);
				goto out;
			}
			nkeys++;
			break;
		case 's':
			sig = optarg;
			break;
		case 'h':
			fputs(evidence_usage, stdout);
			rc = CTL_EXIT_OK;
			goto out;
		default:
			rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: unknown option \"%s\" (see "
						      "pgwardenctl evidence --help)",
				      argv[optind - 1]);
			goto out;
		}
	}
	if (optind != argc - 1) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: expected one report");
		goto out;
	}
	if (sig_path_for(argv[optind], sig, sig_path, sizeof(sig_path))) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: path too long");
		goto out;
	}
	e = read_file(argv[optind], EVIDENCE_REPORT_MAX, &report, &len);
	if (e) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: %s: %s",
			      safe_path(argv[optind], safe, sizeof(safe)), strerror(-e));
		goto out;
	}
	e = read_file(sig_path, EVIDENCE_SIG_MAX, &sig_text, &sig_len);
	if (e) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence verify: signature %s: %s",
			      safe_path(sig_path, safe, sizeof(safe)),
			      e == -EFBIG ? "too large to be a signature" : strerror(-e));
		goto out;
	}
	v = evidence_verify(report, len, sig_text, sig_len, keys, nkeys, key_id, msg, sizeof(msg));
	/* A signed file that is not a report proves nothing either. */
	if (v != EVIDENCE_INVALID && evidence_report_check(report, len, err, sizeof(err))) {
		snprintf(msg, sizeof(msg), "%s", err);
		v = EVIDENCE_INVALID;
	}
	printf("%s: %s: %s\n", verdict_word(v), safe_path(argv[optind], safe, sizeof(safe)), msg);
	rc = v == EVIDENCE_VALID ? CTL_EXIT_OK : v == EVIDENCE_INVALID ? CTL_EXIT_FAIL
								  : CTL_EXIT_UNVOUCHED;
out:
	free(report);
	free(sig_text);
	for (unsigned i = 0; i < nkeys; i++)
		EVP_PKEY_free(keys[i]);
	return rc;
}

/* ---- collect: what a live host proves without running tests ------------------------- */

/* One check of the live report: the same shape as a test's entry in `make evidence`. */
static json_t *check_new(unsigned fact, bool passed, const char *detail)
{
	return json_pack("{s:s, s:s, s:s, s:s}", "kind", "live", "name",
			 evidence_live_facts[fact].name, "outcome", passed ? "passed" : "failed",
			 "detail", detail);
}

static void sha256_file_hex(const char *path, char hex[65], bool *ok)
{
	char *data;
	size_t len;
	uint8_t md[32];
	unsigned int mdlen = 0;

	*ok = false;
	hex[0] = '\0';
	if (read_file(path, EVIDENCE_REPORT_MAX, &data, &len))
		return;
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) && mdlen == 32) {
		for (unsigned i = 0; i < 32; i++)
			sprintf(hex + 2 * i, "%02x", md[i]);
		*ok = true;
	}
	free(data);
}

static json_t *check_tls(json_t *status)
{
	json_t *tls = json_object_get(status, "tls");
	const char *cm = json_string_value(json_object_get(tls, "client_mode"));
	const char *sm = json_string_value(json_object_get(tls, "server_mode"));
	char detail[256];
	bool ok;

	if (!json_is_object(tls) || !cm || !sm)
		return check_new(EVIDENCE_FACT_TLS, false, "pgwardend reports no TLS configuration: "
							"clients and the server are spoken to in clear");
	/* No clear text on either leg: clients must use TLS, the server leg must too and
	 * must prove who it is. */
	ok = strcmp(cm, "require") == 0 &&
	     (strcmp(sm, "verify-full") == 0 || strcmp(sm, "verify-ca") == 0);
	snprintf(detail, sizeof(detail), "tls.client_mode %s (require needed), tls.server_mode %s "
					 "(verify-full or verify-ca needed), client_verify %s",
		 cm, sm, json_string_value(json_object_get(tls, "client_verify")) ?: "?");
	return check_new(EVIDENCE_FACT_TLS, ok, detail);
}

static json_t *check_fips(json_t *status)
{
	bool on = json_is_true(json_object_get(status, "fips"));

	return check_new(EVIDENCE_FACT_FIPS, on, on ? "OpenSSL's FIPS provider is the default for every "
					       "algorithm fetch (tls.fips)"
					     : "tls.fips is off: algorithms are not restricted to a "
					       "FIPS 140-3 validated provider");
}

static json_t *check_policy(json_t *status, const struct config *cfg)
{
	json_t *pol = json_object_get(status, "policy");
	const char *sha = json_string_value(json_object_get(pol, "sha256"));
	char hex[65], detail[512], safe[256];
	bool ok;

	/* The daemon says what it judges sessions by now: that is the policy in force. */
	if (json_is_object(pol) && sha) {
		snprintf(detail, sizeof(detail), "policy %s in force, SHA-256 %s, %lld rule(s)",
			 safe_path(json_string_value(json_object_get(pol, "file")) ?: "?", safe,
				   sizeof(safe)),
			 sha, (long long)json_integer_value(json_object_get(pol, "rules")));
		return check_new(EVIDENCE_FACT_POLICY, true, detail);
	}
	if (json_is_null(pol))
		return check_new(EVIDENCE_FACT_POLICY, false,
				 "pgwardend runs no policy: every statement of every authenticated "
				 "user is forwarded");
	/* An older pgwardend that does not report it: the file its configuration names. */
	if (!cfg || !cfg->policy)
		return check_new(EVIDENCE_FACT_POLICY, false,
				 "pgwardend does not report its policy and its configuration names "
				 "none: policy unknown");
	sha256_file_hex(cfg->policy, hex, &ok);
	snprintf(detail, sizeof(detail), "policy %s, SHA-256 %s (of the file now on disk: this "
					 "pgwardend does not report the digest it loaded)",
		 safe_path(cfg->policy, safe, sizeof(safe)), ok ? hex : "unreadable");
	return check_new(EVIDENCE_FACT_POLICY, ok, detail);
}

static int glob_err(const char *epath, int eerrno)
{
	return 0; /* an unreadable directory entry is reported by the verifier, not here */
}

static json_t *check_audit(json_t *status, const struct config *cfg, EVP_PKEY *const *keys,
			   unsigned nkeys, bool partial)
{
	json_t *st = json_object_get(status, "audit");
	struct audit_verify_opts o = {.keys = keys, .nkeys = nkeys, .partial = partial};
	struct audit_verify_result res;
	struct audit_verify_file *files = NULL;
	struct ctl_mapped *maps = NULL;
	char pattern[4096], detail[1024];
	size_t nfiles = 0;
	glob_t gl = {0};
	json_t *check;

	if (!json_is_object(st))
		return check_new(EVIDENCE_FACT_AUDIT, false,
				 "pgwardend writes no audit trail (audit.path is not set)");
	if (!cfg || !cfg->audit_path)
		return check_new(EVIDENCE_FACT_AUDIT, false,
				 "pgwardend writes an audit trail, but its path is in no configuration "
				 "file this tool could read (set by flags, or the file is unreadable): "
				 "not verified");
	if (json_is_true(json_object_get(st, "failing")))
		return check_new(EVIDENCE_FACT_AUDIT, false,
				 "pgwardend reports its audit trail failing (writes do not complete)");
	/* The current file and the rotated ones beside it (PATH.YYYYMMDDTHHMMSS.uuuuuuZ). */
	snprintf(pattern, sizeof(pattern), "%s.[0-9]*T[0-9]*Z", cfg->audit_path);
	if (glob(pattern, 0, glob_err, &gl) != 0)
		gl.gl_pathc = 0;
	if (gl.gl_pathc >= AUDIT_FILES_MAX) {
		globfree(&gl);
		return check_new(EVIDENCE_FACT_AUDIT, false, "too many rotated audit files to "
								"verify here: archive older ones");
	}
	files = calloc(gl.gl_pathc + 1, sizeof(*files));
	maps = calloc(gl.gl_pathc + 1, sizeof(*maps));
	if (!files || !maps) {
		check = check_new(EVIDENCE_FACT_AUDIT, false, "out of memory");
		goto out;
	}
	for (size_t i = 0; i <= gl.gl_pathc; i++) {
		const char *p = i < gl.gl_pathc ? gl.gl_pathv[i] : cfg->audit_path;
		int e = ctl_map_file(p, &maps[nfiles]);

		if (e) {
			char safe[512];

			snprintf(detail, sizeof(detail), "cannot read audit file %s: %s",
				 safe_path(p, safe, sizeof(safe)), strerror(-e));
			check = check_new(EVIDENCE_FACT_AUDIT, false, detail);
			goto out;
		}
		files[nfiles].name = p;
		files[nfiles].data = maps[nfiles].data;
		files[nfiles].len = maps[nfiles].len;
		nfiles++;
	}
	audit_verify(files, (unsigned)nfiles, &o, &res);
	/* A running daemon's trail ends in records not yet signed: that tail is said, and
	 * the records a checkpoint covers are what is proven. */
	snprintf(detail, sizeof(detail),
		 "%s; %zu file(s), records %llu..%llu, signed through %llu by %s key", res.message,
		 nfiles, (unsigned long long)res.first_seq, (unsigned long long)res.last_seq,
		 (unsigned long long)res.signed_through,
		 nkeys ? "the given" : "the trail's own (unvouched)");
	check = check_new(EVIDENCE_FACT_AUDIT,
			  res.verdict != AUDIT_VERIFY_BROKEN && nkeys && res.signed_through > 0,
			  detail);
out:
	for (size_t i = 0; maps && i < nfiles; i++)
		ctl_unmap_file(&maps[i]);
	free(maps);
	free(files);
	globfree(&gl);
	return check;
}

static json_t *check_steering(json_t *status)
{
	json_t *holder = json_object(), *st;
	const char *instance = json_string_value(json_object_get(status, "steer_instance"));
	const char *mode, *error;
	char detail[512];
	json_t *check;

	if (!holder)
		return NULL;
	(void)ctl_status_steering(instance, true, holder);
	st = json_object_get(holder, "steering");
	mode = json_string_value(json_object_get(st, "mode"));
	error = json_string_value(json_object_get(st, "error"));
	if (error)
		snprintf(detail, sizeof(detail), "steering state not readable: %s", error);
	else
		snprintf(detail, sizeof(detail), "instance %s: %s", instance ?: "default",
			 mode ?: "unknown");
	check = check_new(EVIDENCE_FACT_STEERING, mode && strcmp(mode, "fail-closed") == 0,
			  detail);
	json_decref(holder);
	return check;
}

/* Per control, the live checks that bear on it; proven when all of them passed. */
static json_t *controls_from_checks(json_t *checks)
{
	json_t *controls = json_array();

	for (size_t f = 0; controls && f < EVIDENCE_FACT_COUNT; f++) {
		json_t *check = json_array_get(checks, f);

		for (size_t i = 0; check && evidence_live_facts[f].controls[i]; i++) {
			const char *id = evidence_live_facts[f].controls[i];
			json_t *ctl = NULL, *v;
			size_t k;

			json_array_foreach(controls, k, v)
				if (strcmp(json_string_value(json_object_get(v, "id")), id) == 0)
					ctl = v;
			if (!ctl) {
				ctl = json_pack("{s:s, s:s, s:[]}", "id", id, "status", "proven",
						"checks");
				json_array_append_new(controls, ctl);
			}
			json_array_append(json_object_get(ctl, "checks"), check);
			if (strcmp(json_string_value(json_object_get(check, "outcome")), "passed"))
				json_object_set_new(ctl, "status", json_string("not proven"));
		}
	}
	return controls;
}

static json_t *summary_of(json_t *controls)
{
	size_t i, proven = 0;
	json_t *c;

	json_array_foreach(controls, i, c)
		proven += strcmp(json_string_value(json_object_get(c, "status")), "proven") == 0;
	return json_pack("{s:I, s:I, s:I}", "controls", (json_int_t)json_array_size(controls),
			 "proven", (json_int_t)proven,
			 "not_proven", (json_int_t)(json_array_size(controls) - proven));
}

static json_t *host_facts(void)
{
	struct utsname u;
	char host[256] = "";

	if (uname(&u))
		memset(&u, 0, sizeof(u));
	gethostname(host, sizeof(host) - 1);
	return json_pack("{s:s, s:s, s:s}", "hostname", host, "kernel", u.release, "openssl",
			 OpenSSL_version(OPENSSL_VERSION));
}

static int evidence_collect_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, NULL, 'o'},
		{"key", required_argument, NULL, 'k'},
		{"audit-public-key", required_argument, NULL, 'a'},
		{"audit-partial", no_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	EVP_PKEY *akeys[EVIDENCE_MAX_KEYS];
	unsigned nakeys = 0;
	const char *out = NULL, *key = NULL, *config_path;
	bool partial = false, config_ok = false, config_hashed = false;
	json_t *status = NULL, *checks = NULL, *controls, *report = NULL;
	struct config *cfg = NULL;
	char err[512], safe[512], sig_path[4096], config_sha[65], ts[32], *text = NULL;
	time_t now = time(NULL);
	int c, e, rc = CTL_EXIT_USAGE;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+o:k:a:ph", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'a':
			if (nakeys == EVIDENCE_MAX_KEYS) {
				rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: at most %d "
							      "--audit-public-key", EVIDENCE_MAX_KEYS);
				goto out;
			}
			if (audit_key_load_public(optarg, &akeys[nakeys], err, sizeof(err))) {
				rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: --audit-public-key %s",
					      err);
				goto out;
			}
			nakeys++;
			break;
		case 'p':
			partial = true;
			break;
		case 'h':
			fputs(evidence_usage, stdout);
			rc = CTL_EXIT_OK;
			goto out;
		default:
			rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: unknown option \"%s\" (see "
						      "pgwardenctl evidence --help)",
				      argv[optind - 1]);
			goto out;
		}
	}
	if (!out || optind != argc) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: expected --out REPORT");
		goto out;
	}
	if (sig_path_for(out, NULL, sig_path, sizeof(sig_path))) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: path too long");
		goto out;
	}
	e = ctl_daemon_status(&status);
	if (e) {
		rc = ctl_fail(CTL_EXIT_DOWN, "evidence collect: pgwardend is not reachable at %s: %s",
			      ctl_admin_socket(), strerror(-e));
		goto out;
	}
	/* The configuration the daemon names: where its policy, trail and key are. */
	config_path = json_string_value(json_object_get(status, "config"));
	config_sha[0] = '\0';
	if (config_path) {
		cfg = config_new();
		if (cfg && config_load_file(cfg, config_path, err, sizeof(err)) == 0)
			config_ok = true;
		sha256_file_hex(config_path, config_sha, &config_hashed);
	}
	if (!key && config_ok && cfg->audit_signing_key)
		key = cfg->audit_signing_key;
	if (!key) {
		rc = ctl_fail(CTL_EXIT_USAGE, "evidence collect: no --key, and the daemon's "
					      "configuration names no audit.signing_key");
		goto out;
	}
	if (!nakeys && config_ok && cfg->audit_signing_key &&
	    audit_key_load_public(cfg->audit_signing_key, &akeys[0], err, sizeof(err)) == 0)
		nakeys = 1;
	checks = json_array();
	if (checks) {
		json_array_append_new(checks, check_tls(status));
		json_array_append_new(checks, check_fips(status));
		json_array_append_new(checks, check_policy(status, config_ok ? cfg : NULL));
		json_array_append_new(checks, check_audit(status, config_ok ? cfg : NULL, akeys,
							  nakeys, partial));
		json_array_append_new(checks, check_steering(status));
	}
	controls = checks ? controls_from_checks(checks) : NULL;
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	report = controls ? json_pack("{s:s, s:s, s:s, s:s, s:{s:O, s:O, s:s, s:s}, s:o, "
				      "s:{s:O, s:s?}, s:o, s:o, s:o}",
				      "format", EVIDENCE_FORMAT, "kind", "live", "generated", ts, "note",
				      "what this host enforces now, from pgwardend's status and its "
				      "files; a control is proven here when every live check bearing on "
				      "it passed. It does not replace the tests (make evidence) that show "
				      "the features work.",
				      "pgwarden", "version", json_object_get(status, "version"),
				      "commit", json_object_get(status, "commit"), "ctl_version",
				      pgwarden_version, "ctl_commit", pgwarden_commit, "host",
				      host_facts(), "configuration", "file",
				      json_object_get(status, "config"), "sha256",
				      config_sha[0] ? config_sha : NULL, "summary",
				      summary_of(controls), "controls", controls, "checks",
				      json_incref(checks))
			    : NULL;
	text = report ? json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (!text) {
		rc = ctl_fail(CTL_EXIT_FAIL, "evidence collect: out of memory");
		goto out;
	}
	e = write_file(out, text, strlen(text));
	if (e) {
		rc = ctl_fail(CTL_EXIT_FAIL, "evidence collect: cannot write %s: %s",
			      safe_path(out, safe, sizeof(safe)), strerror(-e));
		goto out;
	}
	rc = sign_to(key, text, strlen(text), sig_path);
	if (rc == CTL_EXIT_OK) {
		json_t *s = json_object_get(report, "summary");

		printf("wrote %s and %s: for %lld of %lld controls every live check passed\n",
		       safe_path(out, safe, sizeof(safe)), sig_path,
		       (long long)json_integer_value(json_object_get(s, "proven")),
		       (long long)json_integer_value(json_object_get(s, "controls")));
	}
out:
	free(text);
	json_decref(report);
	json_decref(checks);
	json_decref(status);
	if (cfg)
		config_unref(cfg);
	for (unsigned i = 0; i < nakeys; i++)
		EVP_PKEY_free(akeys[i]);
	return rc;
}

int ctl_evidence(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		fputs(evidence_usage, stdout);
		return CTL_EXIT_OK;
	}
	if (argc < 2) {
		fputs(evidence_usage, stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "sign") == 0)
		return evidence_sign_cmd(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return evidence_verify_cmd(argc - 1, argv + 1);
	if (strcmp(argv[1], "collect") == 0)
		return evidence_collect_cmd(argc - 1, argv + 1);
	if (argv[1][0] == '-') /* `pgwardenctl evidence --out R`: collect */
		return evidence_collect_cmd(argc, argv);
	return ctl_fail(CTL_EXIT_USAGE,
			"evidence: unknown subcommand \"%s\" (sign, verify or collect)", argv[1]);
}
