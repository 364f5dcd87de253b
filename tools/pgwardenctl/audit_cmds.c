/*
 * audit_cmds: pgwardenctl audit keygen and audit verify. Both work on files only (no
 * daemon): an assessor verifies a copied trail on their own machine with the public key.
 *
 *   pgwardenctl audit keygen --out PATH           PATH (0600) and PATH.pub (0644)
 *   pgwardenctl audit verify [--public-key K]... [--partial] [--quiet] FILE...
 *
 * verify's exit status: 0 intact (every record chained and signed by a given key, closed
 * by pgwardend's stop), 1 damage or tampering (the first record concerned is named),
 * 2 usage or an unreadable file, 4 nothing wrong found but not everything vouched for
 * (unsigned tail, open end, or no --public-key).
 */
#include "ctl.h"

#include "audit/audit_sign.h"
#include "audit/audit_verify.h"
#include "base/sanitize.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VERIFY_MAX_KEYS 16

static const char audit_usage[] =
	"usage: pgwardenctl audit keygen --out PATH\n"
	"       pgwardenctl audit verify [--public-key FILE]... [--partial] [--quiet] FILE...\n"
	"\n"
	"keygen writes an Ed25519 key pair for audit.signing_key: PATH (private, 0600) and\n"
	"PATH.pub (public, for verify). It never overwrites a file.\n"
	"\n"
	"verify checks an audit trail's chain, signatures and file continuity, and names the\n"
	"first modified, deleted, reordered, replayed or truncated record by sequence number.\n"
	"Give every file of the trail (rotated files and the current one, in any order).\n"
	"  --public-key FILE  a public key (PEM) the signatures must verify under; repeat for\n"
	"                     several. Without it, the key the trail names is used, and the\n"
	"                     verdict is at best 'not vouched for'.\n"
	"  --partial          the trail may begin after seq 1 (older files were archived)\n"
	"  --quiet            print only the verdict line\n"
	"Exit status: 0 intact, 1 damaged or tampered with, 2 usage or unreadable file,\n"
	"4 nothing wrong found but not all of it is signed (or no --public-key).\n";

static int audit_keygen_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *out = NULL;
	char err[512];
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'h':
			fputs(audit_usage, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_fail(CTL_EXIT_USAGE, "audit keygen: unknown option \"%s\" (usage: "
						       "pgwardenctl audit keygen --out PATH)",
					argv[optind - 1]);
		}
	}
	if (!out || optind < argc)
		return ctl_fail(CTL_EXIT_USAGE, "audit keygen: expected --out PATH and nothing else");
	if (audit_keygen(out, err, sizeof(err)))
		return ctl_fail(CTL_EXIT_FAIL, "audit keygen: %s", err);
	printf("wrote %s (private key, mode 0600: audit.signing_key) and %s.pub (public key: "
	       "pgwardenctl audit verify --public-key)\n",
	       out, out);
	return CTL_EXIT_OK;
}

int ctl_map_file(const char *path, struct ctl_mapped *m)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	m->name = path;
	m->data = "";
	m->len = 0;
	m->mapped = false;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	if (st.st_size > 0) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);

		if (p == MAP_FAILED) {
			int err = -errno;

			close(fd);
			return err;
		}
		m->data = p;
		m->len = (size_t)st.st_size;
		m->mapped = true;
	}
	close(fd);
	return 0;
}

void ctl_unmap_file(struct ctl_mapped *m)
{
	if (m->mapped)
		munmap(m->data, m->len);
	m->mapped = false;
	m->data = "";
	m->len = 0;
}

static const char *verdict_word(enum audit_verdict v)
{
	switch (v) {
	case AUDIT_VERIFY_INTACT:
		return "OK";
	case AUDIT_VERIFY_BROKEN:
		return "FAILED";
	case AUDIT_VERIFY_UNVOUCHED:
		return "NOT VOUCHED FOR";
	}
	return "?";
}

static int audit_verify_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{"public-key", required_argument, NULL, 'k'},
		{"partial", no_argument, NULL, 'p'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	EVP_PKEY *keys[VERIFY_MAX_KEYS];
	struct audit_verify_opts o = {.keys = keys, .report = stdout};
	struct audit_verify_result res;
	struct audit_verify_file *files = NULL;
	struct ctl_mapped *maps = NULL;
	unsigned nkeys = 0, nfiles = 0;
	bool quiet = false;
	char err[512], safe[512];
	int c, rc = CTL_EXIT_USAGE;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:pqh", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (nkeys == VERIFY_MAX_KEYS) {
				rc = ctl_fail(CTL_EXIT_USAGE, "audit verify: at most %d --public-key",
					      VERIFY_MAX_KEYS);
				goto out;
			}
			if (audit_key_load_public(optarg, &keys[nkeys], err, sizeof(err))) {
				rc = ctl_fail(CTL_EXIT_USAGE, "audit verify: --public-key %s", err);
				goto out;
			}
			nkeys++;
			break;
		case 'p':
			o.partial = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			fputs(audit_usage, stdout);
			rc = CTL_EXIT_OK;
			goto out;
		default:
			rc = ctl_fail(CTL_EXIT_USAGE, "audit verify: unknown option \"%s\" (see "
						      "pgwardenctl audit --help)",
				      argv[optind - 1]);
			goto out;
		}
	}
	if (optind >= argc) {
		rc = ctl_fail(CTL_EXIT_USAGE, "audit verify: expected the trail's files");
		goto out;
	}
	nfiles = (unsigned)(argc - optind);
	files = calloc(nfiles, sizeof(*files));
	maps = calloc(nfiles, sizeof(*maps));
	if (!files || !maps) {
		rc = ctl_fail(CTL_EXIT_FAIL, "audit verify: out of memory");
		goto out;
	}
	for (unsigned i = 0; i < nfiles; i++) {
		int e = ctl_map_file(argv[optind + i], &maps[i]);

		if (e) {
			sanitize_str(safe, sizeof(safe), argv[optind + i], SANITIZE_TERMINAL, NULL);
			rc = ctl_fail(CTL_EXIT_USAGE, "audit verify: %s: %s", safe, strerror(-e));
			goto out;
		}
		files[i].name = maps[i].name;
		files[i].data = maps[i].data;
		files[i].len = maps[i].len;
	}
	o.nkeys = nkeys;
	if (quiet)
		o.report = NULL;
	audit_verify(files, nfiles, &o, &res);
	printf("%s: %s\n", verdict_word(res.verdict), res.message);
	rc = res.verdict == AUDIT_VERIFY_INTACT ? CTL_EXIT_OK :
	     res.verdict == AUDIT_VERIFY_BROKEN ? CTL_EXIT_FAIL :
						  CTL_EXIT_UNVOUCHED;
out:
	for (unsigned i = 0; maps && i < nfiles; i++)
		ctl_unmap_file(&maps[i]);
	free(maps);
	free(files);
	for (unsigned i = 0; i < nkeys; i++)
		EVP_PKEY_free(keys[i]);
	return rc;
}

int ctl_audit(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(audit_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? CTL_EXIT_USAGE : CTL_EXIT_OK;
	}
	if (strcmp(argv[1], "keygen") == 0)
		return audit_keygen_cmd(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return audit_verify_cmd(argc - 1, argv + 1);
	return ctl_fail(CTL_EXIT_USAGE, "audit: unknown subcommand \"%s\" (keygen or verify)",
			argv[1]);
}
