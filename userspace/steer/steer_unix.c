/*
 * steer_unix: whether PostgreSQL's Unix socket is out of reach, so that the relay's socket
 * is the only way in for local users who are not root or the server's own user.
 *
 * Matching a connect()'s path in the kernel cannot be made sound: the hook sees the path
 * as spelled, before the kernel resolves it, and "//run/x", "/run/./x", a relative path, a
 * symlink, a hard link, /proc/self/root/... or the path with a NUL and garbage inside the
 * address length all reach the same socket. So the guarantee is made by the file system
 * instead: the server's socket sits in a directory unprivileged users cannot search
 * (PostgreSQL's unix_socket_directories), and the relay's socket sits at the path clients
 * use. Every spelling of that path is the relay; every spelling of the private one is
 * EACCES. Attach checks both here, with the file modes as the kernel will apply them
 * (POSIX ACLs are not read: a directory that grants others search through an ACL is the
 * operator's to avoid). Root and the server's own user can still reach the private socket:
 * they own the server anyway (docs/THREAT_MODEL.md).
 */
#include "steer/steer_internal.h"

#include "base/errbuf.h"
#include "base/log.h"
#include "base/sanitize.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SO_ACCEPTCON_FLAG 0x10000 /* __SO_ACCEPTCON in /proc/net/unix's Flags column */

/*
 * Can a user who is neither root, nor the owner nor in the group of anything on the way,
 * connect to the socket at path? Every directory from / down must grant others search
 * (x), and the socket others write. A path that does not resolve is not reachable.
 */
static bool reachable_by_others(const char *path)
{
	char real[PATH_MAX];
	struct stat st;

	if (path[0] == '@')
		return true; /* abstract: no permissions at all */
	if (!realpath(path, real))
		return false;
	for (char *slash = real;; slash = strchr(slash + 1, '/')) {
		char keep;

		if (!slash)
			break;
		keep = slash[1];
		slash[1] = '\0'; /* the directory, with its trailing slash */
		if (stat(real, &st) != 0 || !(st.st_mode & S_IXOTH)) {
			slash[1] = keep;
			return false;
		}
		slash[1] = keep;
	}
	return stat(real, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & S_IWOTH);
}

/* Whether two paths name the same file (both resolve, same device and inode). */
static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* Is the socket file at path owned by one of owners? An abstract socket has no file: it
 * counts only when the owners are not known. */
static bool owned_by(const char *path, const uid_t *owners, unsigned n)
{
	struct stat st;

	if (path[0] == '@' || stat(path, &st) != 0)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (st.st_uid == owners[i])
			return true;
	return false;
}

/* ".s.PGSQL.<port>" of a protected port as the file name of path? */
static bool is_server_socket(const char *path, const uint16_t *ports, unsigned nports)
{
	const char *base = strrchr(path, '/');
	unsigned port;
	char tail;

	base = base ? base + 1 : path[0] == '@' ? path + 1 : path;
	if (sscanf(base, ".s.PGSQL.%u%c", &port, &tail) != 1)
		return false;
	for (unsigned i = 0; i < nports; i++)
		if (ports[i] == port)
			return true;
	return false;
}

unsigned steer_unix_server_uids(const uint16_t *ports, unsigned nports, uid_t *out,
				unsigned max)
{
	static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	unsigned n = 0;

	for (size_t fi = 0; fi < 2; fi++) {
		FILE *f = fopen(files[fi], "re");
		char line[512];

		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			unsigned port, state, uid, j;

			/* sl local rem st tx:rx tr:when retrnsmt uid ... */
			if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %u",
				   &port, &state, &uid) != 3 || state != 0x0A)
				continue;
			for (j = 0; j < nports && ports[j] != port; j++)
				;
			if (j == nports)
				continue;
			for (j = 0; j < n && out[j] != (uid_t)uid; j++)
				;
			if (j == n && n < max)
				out[n++] = (uid_t)uid;
		}
		fclose(f);
	}
	return n;
}

unsigned steer_unix_exposed(const uint16_t *ports, unsigned nports, const char *relay,
			    const uid_t *owners, unsigned nowners, char (*out)[PGW_UNIX_PATH_MAX],
			    unsigned max)
{
	char line[512 + PGW_UNIX_PATH_MAX];
	FILE *f = fopen("/proc/net/unix", "re");
	unsigned n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long flags, type, state;
		const char *path;
		int off = -1;

		/* Num: RefCount Protocol Flags Type St Inode Path */
		if (sscanf(line, "%*s %*s %*s %lx %lx %lx %*s %n", &flags, &type, &state, &off) != 3 ||
		    off < 0 || !(flags & SO_ACCEPTCON_FLAG) || type != SOCK_STREAM)
			continue;
		line[strcspn(line, "\n")] = '\0';
		path = line + off;
		if (!is_server_socket(path, ports, nports))
			continue;
		if (relay && (strcmp(path, relay) == 0 || same_file(path, relay)))
			continue;
		if (!reachable_by_others(path))
			continue;
		if (nowners && !owned_by(path, owners, nowners))
			continue; /* a look-alike some user made: not the server's */
		if (n < max)
			snprintf(out[n], PGW_UNIX_PATH_MAX, "%s", path);
		n++;
	}
	fclose(f);
	return n;
}

/* The relay's socket must not be replaceable by others while pgwardend is down: its
 * directory must not be writable by them. */
static int relay_dir_check(const char *relay, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	char *slash;
	struct stat st;

	if (snprintf(dir, sizeof(dir), "%s", relay) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	slash = strrchr(dir, '/');
	if (!slash)
		return 0;
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if (stat(dir, &st) == 0 && (st.st_mode & S_IWOTH)) {
		errbuf_set(err, errlen,
			   "the relay's Unix socket directory %s is writable by every local user: "
			   "while pgwardend is down anyone could put a socket at %s; use a "
			   "directory only root (and the postgres user) may write",
			   dir, relay);
		return -EPERM;
	}
	return 0;
}

int steer_unix_check(const struct steer_opts *o, char *err, size_t errlen)
{
	char exposed[4][PGW_UNIX_PATH_MAX], shown[4 * PGW_UNIX_PATH_MAX + 1];
	uid_t owners[16];
	unsigned n, nowners;
	int rc;

	if (o->unix_relay) {
		rc = relay_dir_check(o->unix_relay, err, errlen);
		if (rc)
			return rc;
	}
	for (unsigned i = 0; i < o->nunix; i++) {
		const char *p = o->unix_paths[i];

		if (o->unix_relay && (strcmp(p, o->unix_relay) == 0 || same_file(p, o->unix_relay)))
			continue; /* the relay already sits at the path clients use */
		if (reachable_by_others(p)) {
			sanitize_str(shown, sizeof(shown), p, SANITIZE_TERMINAL, NULL);
			errbuf_set(err, errlen,
				   "PostgreSQL's socket %s is reachable by every local user, by "
				   "any spelling of its path: move it out of their reach "
				   "(unix_socket_directories = '/var/lib/postgresql/pgwarden', a "
				   "directory of mode 0700 owned by postgres) and give its old "
				   "path to the relay (--unix-relay, unix_listen); see "
				   "docs/STEERING.md",
				   shown);
			return -EPERM;
		}
	}
	/* The server's sockets are the ones its user owns: the user listening on the protected
	 * TCP ports, and the owner of each --unix-socket. A look-alike socket another user
	 * made in /tmp is no way around the relay and must not block an attach. */
	nowners = steer_unix_server_uids(o->ports, o->nports, owners, 16);
	for (unsigned i = 0; i < o->nunix && nowners < 16; i++) {
		struct stat st;

		if (stat(o->unix_paths[i], &st) == 0)
			owners[nowners++] = st.st_uid;
	}
	n = steer_unix_exposed(o->ports, o->nports, o->unix_relay, owners, nowners, exposed, 4);
	if (n == 0)
		return 0;
	sanitize_str(shown, sizeof(shown), exposed[0], SANITIZE_TERMINAL, NULL);
	if (o->nunix > 0 && nowners > 0) {
		errbuf_set(err, errlen,
			   "PostgreSQL also listens on %s, which every local user can reach: %u "
			   "server socket(s) would bypass the relay; keep unix_socket_directories "
			   "to the private directory only", shown, n);
		return -EPERM;
	}
	log_warn("steer_unix_exposed",
		 "a PostgreSQL Unix socket, %s, is reachable by every local user and is not "
		 "steered: local clients that use it bypass pgwarden (see docs/STEERING.md, "
		 "--unix-socket and --unix-relay)", shown);
	return 0;
}
