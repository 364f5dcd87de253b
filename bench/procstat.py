"""A process's CPU time, read from the scheduler's own clock.

/proc/PID/stat gives utime+stime in clock ticks (USER_HZ: 10 ms), and a relay spends only a
few dozen of them on one stream transfer or one block of connections, so that figure's
rounding alone was a few percent of what the bench compares. /proc/PID/task/TID/schedstat
gives each thread's time on a CPU in nanoseconds. It covers live threads only: every
process the bench measures starts its threads at start-up and keeps them (the relay's
workers, admin and audit threads; PgBouncer and HAProxy alike), so no CPU spent during a
measurement is lost with an exited thread. A kernel without schedstat (CONFIG_SCHED_INFO
off) falls back to /proc/PID/stat, and `source()` says which one counted.
"""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
_HAS_SCHEDSTAT = os.path.exists("/proc/self/schedstat")


def source():
    """What cpu_seconds() reads, for the report."""
    return ("schedstat (ns, per thread)" if _HAS_SCHEDSTAT
            else "/proc/PID/stat (%d ms ticks)" % (1000 // CLK_TCK))


def user_system_ticks(pid):
    """(user, system) CPU of pid in clock ticks, from /proc/PID/stat: coarse, but the only
    split of the two the kernel keeps per process. Raises OSError when pid is gone."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _stat_seconds(pid):
    return sum(user_system_ticks(pid)) / CLK_TCK


def cpu_seconds(pid):
    """CPU time of all of pid's live threads, in seconds. Raises OSError when pid is gone."""
    if not _HAS_SCHEDSTAT:
        return _stat_seconds(pid)
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return total / 1e9
