"""Run a program with bpf(2) refused (EPERM), as it is for a daemon without CAP_BPF on a
kernel with unprivileged BPF disabled (Debian 12's 6.1): `no_bpf_exec.py PROGRAM ARGS...`.

A seccomp filter (inherited across exec, so the program keeps this process's pid) makes every
bpf() call fail; everything else is allowed.
"""

import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM = 1
NR_BPF = {"x86_64": 321, "aarch64": 280}


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main():
    nr = NR_BPF[os.uname().machine]
    # struct sock_filter {u16 code; u8 jt, jf; u32 k}: load the syscall number, refuse bpf.
    prog = [(0x20, 0, 0, 0),                                # ld  [nr]
            (0x15, 0, 1, nr),                               # jeq #bpf, 0, 1
            (0x06, 0, 0, SECCOMP_RET_ERRNO | EPERM),        # ret ERRNO(EPERM)
            (0x06, 0, 0, SECCOMP_RET_ALLOW)]                # ret ALLOW
    raw = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
    fprog = SockFprog(len(prog), ctypes.cast(raw, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog)) != 0):
        sys.exit("seccomp: %s" % os.strerror(ctypes.get_errno()))
    os.execv(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
