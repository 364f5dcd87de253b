"""PostgreSQL 15's own regression SQL (src/test/regress/sql/*.sql), fetched at test time
from Debian's postgresql-15 source package into a cache directory outside the tree, for the
differential lexer test. Nothing of it is committed.

Debian's deb-src lines are usually not configured, so a private apt configuration under the
cache directory reads the mirror from /etc/apt/sources.list.d/debian.sources at run time
(the mirror's host is never written into the repository) and asks only for source indexes.
"""

import glob
import os
import shutil
import subprocess
import tarfile

DEFAULT_CACHE = os.environ.get("PGWARDEN_REGRESS_CACHE", "/tmp/pgwarden-regress-sql-15")
SOURCES = "/etc/apt/sources.list.d/debian.sources"


def _deb822_stanzas(path):
    stanza = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if stanza:
                    yield stanza
                stanza = {}
                continue
            if line.startswith("#") or line[0] in " \t" or ":" not in line:
                continue
            k, v = line.split(":", 1)
            stanza[k.strip()] = v.strip()
    if stanza:
        yield stanza


def _source_lists(path):
    """One deb-src line per stanza of the system's deb822 sources, by their own URIs (the
    main archive first: a security mirror may not carry the sources)."""
    out = []
    for s in _deb822_stanzas(path):
        if "deb" not in s.get("Types", "").split():
            continue
        signed = s.get("Signed-By")
        opt = "[signed-by=%s] " % signed if signed else ""
        for uri in s.get("URIs", "").split():
            out.append("deb-src %s%s %s %s\n" % (opt, uri, s.get("Suites", ""),
                                                  s.get("Components", "main")))
    out.sort(key=lambda line: "security" in line)
    return out


def fetch(cache=DEFAULT_CACHE):
    """The directory holding the regression .sql files; fetched once, then reused."""
    sqldir = os.path.join(cache, "sql")
    if len(glob.glob(os.path.join(sqldir, "*.sql"))) > 100:
        return sqldir
    apt = os.path.join(cache, "apt")
    src = os.path.join(cache, "src")
    for d in (apt, src, os.path.join(apt, "lists", "partial"),
              os.path.join(apt, "cache", "archives", "partial")):
        os.makedirs(d, exist_ok=True)
    errors = []
    for i, line in enumerate(_source_lists(SOURCES)):
        lists = os.path.join(apt, "lists%d" % i)
        os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
        listfile = os.path.join(apt, "sources%d.list" % i)
        with open(listfile, "w") as f:
            f.write(line)
        opts = ["-o", "Dir::Etc::SourceList=" + listfile,
                "-o", "Dir::Etc::SourceParts=/nonexistent",
                "-o", "Dir::State::Lists=" + lists,
                "-o", "Dir::Cache=" + os.path.join(apt, "cache"),
                "-o", "APT::Get::List-Cleanup=0", "-q"]
        r = subprocess.run(["apt-get"] + opts + ["update"], capture_output=True, text=True,
                           timeout=600)
        if r.returncode == 0:
            r = subprocess.run(["apt-get"] + opts + ["source", "--download-only",
                                                     "postgresql-15"],
                               capture_output=True, text=True, cwd=src, timeout=600)
        if r.returncode == 0:
            break
        errors.append(r.stderr.strip().splitlines()[-1:] or ["apt-get failed"])
    else:
        raise RuntimeError("cannot fetch postgresql-15's source: %s" % errors)
    origs = glob.glob(os.path.join(src, "postgresql-15_*.orig.tar.*"))
    if not origs:
        raise RuntimeError("no postgresql-15 orig tarball in %s" % src)
    tmp = sqldir + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(origs[0]) as t:
        for m in t.getmembers():
            parts = m.name.split("/")
            if (m.isfile() and len(parts) == 6 and parts[1:5] == ["src", "test", "regress", "sql"]
                    and parts[5].endswith(".sql")):
                with t.extractfile(m) as fin, open(os.path.join(tmp, parts[5]), "wb") as fout:
                    fout.write(fin.read())
    shutil.rmtree(sqldir, ignore_errors=True)
    os.rename(tmp, sqldir)
    return sqldir


if __name__ == "__main__":
    print(fetch())
