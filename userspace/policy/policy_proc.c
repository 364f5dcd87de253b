/*
 * policy_proc: a local client's executable and cgroup path, from what the kernel recorded
 * when it connected (pid, uid, cgroup id), for match.exe and match.cgroup.
 *
 * The cgroup id is the cgroup directory's kernfs inode number, which is also the handle
 * name_to_handle_at() gives for it on the cgroup2 mount (FILEID_KERNFS: the 64-bit id).
 * open_by_handle_at() turns the id straight into the directory (it needs
 * CAP_DAC_READ_SEARCH); without that capability the tree is walked, comparing each
 * directory's handle, and the answers are cached: cgroup ids are never reused while the
 * system runs (64-bit kernfs ids), so a cached path is the path the id had when created.
 * A cgroup renamed since (rare: only by its owner) shows its old path until it is gone.
 */
#include "policy/policy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CGROUP_WALK_MAX_DIRS 100000
#define CACHE_SLOTS 256

static pthread_once_t root_once = PTHREAD_ONCE_INIT;
static char cgroup2_root[PATH_MAX];

/* Undo /proc/self/mounts' octal escapes (\040 for a space) in place. */
static void unescape_mount(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

static void find_root(void)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[4096];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *dev = strtok(line, " "), *dir = strtok(NULL, " "), *type = strtok(NULL, " ");

		if (dev && dir && type && !strcmp(type, "cgroup2")) {
			unescape_mount(dir);
			snprintf(cgroup2_root, sizeof(cgroup2_root), "%s", dir);
			break;
		}
	}
	fclose(f);
}

const char *policy_proc_cgroup2_root(void)
{
	pthread_once(&root_once, find_root);
	return cgroup2_root[0] ? cgroup2_root : NULL;
}

struct kernfs_handle {
	struct file_handle fh;
	uint64_t id;
};

int policy_proc_cgroup_id(const char *path, uint64_t *id)
{
	struct kernfs_handle h = {.fh.handle_bytes = sizeof(uint64_t)};
	int mount_id;

	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0))
		return -errno;
	if (h.fh.handle_bytes != sizeof(uint64_t))
		return -EINVAL;
	memcpy(id, h.fh.f_handle, sizeof(*id));
	return 0;
}

/* ---- cache ---------------------------------------------------------------------------- */

struct cache_slot {
	uint64_t id;
	char *path;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_slot cache[CACHE_SLOTS];

static bool cache_get(uint64_t id, char *out, size_t n)
{
	bool hit = false;

	pthread_mutex_lock(&cache_lock);
	struct cache_slot *s = &cache[id % CACHE_SLOTS];

	if (s->path && s->id == id) {
		snprintf(out, n, "%s", s->path);
		hit = true;
	}
	pthread_mutex_unlock(&cache_lock);
	return hit;
}

static void cache_put(uint64_t id, const char *path)
{
	char *copy = strdup(path);

	if (!copy)
		return;
	pthread_mutex_lock(&cache_lock);
	struct cache_slot *s = &cache[id % CACHE_SLOTS];

	free(s->path);
	s->id = id;
	s->path = copy;
	pthread_mutex_unlock(&cache_lock);
}

/* ---- id → path ---------------------------------------------------------------------- */

/* The path below root of what fd is, via /proc/self/fd. */
static int fd_path(int fd, const char *root, char *out, size_t n)
{
	char link[64], target[PATH_MAX];
	ssize_t len;
	size_t rl = strlen(root);

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, target, sizeof(target) - 1);
	if (len < 0)
		return -errno;
	target[len] = '\0';
	if (strncmp(target, root, rl) || (target[rl] != '/' && target[rl] != '\0'))
		return -ENOENT;
	snprintf(out, n, "%s", target[rl] ? target + rl : "/");
	return 0;
}

static int by_handle(uint64_t id, const char *root, char *out, size_t n)
{
	struct kernfs_handle h = {.fh.handle_bytes = sizeof(uint64_t), .fh.handle_type = 0xfe};
	int mfd, fd, rc;

	memcpy(h.fh.f_handle, &id, sizeof(id));
	mfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		return -errno;
	fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rc = fd < 0 ? -errno : 0;
	close(mfd);
	if (rc)
		return rc;
	rc = fd_path(fd, root, out, n);
	close(fd);
	return rc;
}

/* Breadth-first would need a queue; depth-first with an explicit path buffer and a cap on
 * the directories visited keeps memory fixed. */
static int walk_dir(const char *dir, uint64_t id, char *out, size_t n, unsigned *budget)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = -ENOENT;

	if (!d)
		return -errno;
	while (rc == -ENOENT && (e = readdir(d))) {
		char sub[PATH_MAX];
		uint64_t got;

		if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!*budget) {
			rc = -E2BIG;
			break;
		}
		(*budget)--;
		if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= sizeof(sub))
			continue;
		if (!policy_proc_cgroup_id(sub, &got) && got == id) {
			snprintf(out, n, "%s", sub);
			rc = 0;
			break;
		}
		rc = walk_dir(sub, id, out, n, budget);
	}
	closedir(d);
	return rc;
}

int policy_proc_cgroup_path(uint64_t cgroup_id, char *out, size_t n)
{
	const char *root = policy_proc_cgroup2_root();
	char full[PATH_MAX];
	uint64_t root_id;
	unsigned budget = CGROUP_WALK_MAX_DIRS;
	int rc;

	out[0] = '\0';
	if (!root)
		return -ENOENT;
	if (cache_get(cgroup_id, out, n))
		return 0;
	if (!policy_proc_cgroup_id(root, &root_id) && root_id == cgroup_id) {
		snprintf(out, n, "/");
		return 0;
	}
	rc = by_handle(cgroup_id, root, out, n);
	if (rc == -EPERM || rc == -EOPNOTSUPP || rc == -EINVAL) {
		rc = walk_dir(root, cgroup_id, full, sizeof(full), &budget);
		if (!rc)
			snprintf(out, n, "%s", full + strlen(root));
	}
	if (rc) {
		out[0] = '\0';
		return rc;
	}
	cache_put(cgroup_id, out);
	return 0;
}

/* The cgroup (v2 line "0::/path") pid is in now. */
static int pid_cgroup(uint32_t pid, char *out, size_t n)
{
	char path[64], line[PATH_MAX + 8];
	FILE *f;
	int rc = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%u/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			size_t len = strcspn(line + 3, "\n");

			if (len >= n) {
				rc = -ENAMETOOLONG;
				break;
			}
			memcpy(out, line + 3, len);
			out[len] = '\0';
			rc = 0;
			break;
		}
	fclose(f);
	return rc;
}

int policy_proc_exe(uint32_t pid, uint32_t uid, uint64_t cgroup_id, char *out, size_t n)
{
	char dir[64], link[80], cg[PATH_MAX], want[PATH_MAX];
	struct stat st;
	ssize_t len;
	int dfd, rc;

	out[0] = '\0';
	snprintf(dir, sizeof(dir), "/proc/%u", pid);
	/* Hold the /proc/PID directory: if the pid is reused after this, the links below
	 * fail (ESRCH) instead of describing the new process. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fstat(dfd, &st) || st.st_uid != uid) {
		close(dfd);
		return -ESRCH; /* not the process that connected */
	}
	snprintf(link, sizeof(link), "exe");
	len = readlinkat(dfd, link, out, n - 1);
	rc = len < 0 ? -errno : 0;
	if (!rc)
		out[len] = '\0';
	/* Still in the recorded cgroup: a different process under a reused pid would have
	 * to share uid and cgroup to pass. */
	if (!rc && cgroup_id && !pid_cgroup(pid, cg, sizeof(cg)) &&
	    !policy_proc_cgroup_path(cgroup_id, want, sizeof(want)) && strcmp(cg, want))
		rc = -ESRCH;
	if (!rc && fstatat(dfd, "exe", &st, 0) != 0)
		rc = -errno;
	close(dfd);
	if (rc)
		out[0] = '\0';
	return rc;
}
