"""Certificates for the TLS tests, made at test time with the openssl command line (never
committed): a CA, server certificates with the names loopback tests dial, client
certificates good and bad, CRLs.

    pki = Pki(tmpdir)
    ca = pki.ca("Test CA")
    srv = pki.cert(ca, "db.example.com", server=True, san="DNS:localhost,IP:127.0.0.1,IP:::1")
    alice = pki.cert(ca, "alice", client=True)
    crl = pki.crl(ca, revoked=[alice])

Each certificate is a Cert with .crt, .key (mode 0600, as pgwarden and PostgreSQL require)
and .serial. Keys are P-256: quick to make on a shared machine.
"""

import os
import subprocess


class Cert:
    def __init__(self, name, crt, key, serial=None, ca=None):
        self.name = name
        self.crt = crt
        self.key = key
        self.serial = serial
        self.ca = ca


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=cwd,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr))
    return r.stdout


class Pki:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._serial = 0x1000

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _key(self, name):
        key = self._path(name + ".key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", key)
        os.chmod(key, 0o600)
        return key

    def ca(self, cn):
        key = self._key(cn.replace(" ", "_"))
        crt = self._path(cn.replace(" ", "_") + ".crt")
        openssl("req", "-x509", "-new", "-key", key, "-out", crt, "-days", "2",
                "-subj", "/CN=%s" % cn,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ca = Cert(cn, crt, key)
        # An openssl ca database for CRLs.
        ca.db = self._path(cn.replace(" ", "_") + ".index")
        open(ca.db, "w").close()
        return ca

    def cert(self, ca, cn, server=False, client=False, san=None, days=2, expired=False,
             subject=None):
        self._serial += 1
        name = "%s-%x" % (cn.replace(" ", "_").replace("/", "_"), self._serial)
        key = self._key(name)
        csr = self._path(name + ".csr")
        crt = self._path(name + ".crt")
        ext = self._path(name + ".ext")
        openssl("req", "-new", "-key", key, "-out", csr, "-subj", subject or "/CN=%s" % cn)
        lines = ["basicConstraints=CA:FALSE"]
        if server:
            lines.append("extendedKeyUsage=serverAuth")
        if client:
            lines.append("extendedKeyUsage=clientAuth")
        if san:
            lines.append("subjectAltName=%s" % san)
        with open(ext, "w") as f:
            f.write("\n".join(lines) + "\n")
        args = ["x509", "-req", "-in", csr, "-CA", ca.crt, "-CAkey", ca.key, "-out", crt,
                "-set_serial", str(self._serial), "-extfile", ext]
        if expired:
            # Valid two days ago, expired yesterday: x509 -req has no -startdate, so the
            # ca command signs it.
            args = ["ca", "-batch", "-notext", "-config", self._ca_config(ca), "-in", csr,
                    "-out", crt, "-startdate", _days_ago(2), "-enddate", _days_ago(1),
                    "-extfile", ext, "-cert", ca.crt, "-keyfile", ca.key]
        else:
            args += ["-days", str(days)]
        openssl(*args)
        return Cert(cn, crt, key, serial=self._serial, ca=ca)

    def _ca_config(self, ca):
        conf = self._path(os.path.basename(ca.db) + ".cnf")
        newcerts = self._path("newcerts")
        os.makedirs(newcerts, exist_ok=True)
        serial = self._path(os.path.basename(ca.db) + ".serial")
        if not os.path.exists(serial):
            with open(serial, "w") as f:
                f.write("%x\n" % 0x9000)
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s\nnew_certs_dir = %s\n"
                    "serial = %s\ndefault_md = sha256\npolicy = p\ndefault_crl_days = 1\n"
                    "unique_subject = no\n[p]\ncommonName = supplied\n"
                    % (ca.db, newcerts, serial))
        return conf

    def crl(self, ca, revoked=()):
        """A CRL from ca revoking the given certificates, valid for a day."""
        conf = self._ca_config(ca)
        for c in revoked:
            openssl("ca", "-config", conf, "-revoke", c.crt, "-cert", ca.crt, "-keyfile",
                    ca.key)
        out = self._path(os.path.basename(ca.db) + ".crl.pem")
        openssl("ca", "-config", conf, "-gencrl", "-cert", ca.crt, "-keyfile", ca.key,
                "-out", out)
        return out

    def bundle(self, name, *paths):
        out = self._path(name)
        with open(out, "w") as f:
            for p in paths:
                with open(p) as src:
                    f.write(src.read())
        return out


def _days_ago(n):
    import datetime
    t = datetime.datetime.utcnow() - datetime.timedelta(days=n)
    return t.strftime("%Y%m%d%H%M%SZ")
