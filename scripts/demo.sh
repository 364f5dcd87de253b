#!/bin/sh
# `make demo`: a real session through pgwarden, start to finish, then everything it started
# is stopped again.
#
#   make demo                                  throwaway PostgreSQL on loopback
#   PGWARDEN_DEMO_UPSTREAM=127.0.0.1:5432 \
#   PGWARDEN_DEMO_USER=me PGWARDEN_DEMO_PASSWORD=... PGWARDEN_DEMO_DB=mydb make demo
#                                              an existing server instead
set -eu

build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
daemon="$top/$build/pgwardend"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
work=$(mktemp -d /tmp/pgwarden-demo.XXXXXX)
relay_pid=""
cluster=""
cgroup=""
instance=pgwdemo$$

cleanup() {
	if [ -n "$cgroup" ]; then
		"$top/$build/pgwardenctl" detach --instance "$instance" >/dev/null 2>&1 || true
		rmdir "$cgroup" 2>/dev/null || true
	fi
	[ -n "$relay_pid" ] && kill -TERM "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null || true
	[ -n "$cluster" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$cluster" -m fast -w stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A free loopback port, chosen by the kernel.
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -n "${PGWARDEN_DEMO_UPSTREAM:-}" ]; then
	upstream=$PGWARDEN_DEMO_UPSTREAM
	user=${PGWARDEN_DEMO_USER:-postgres}
	password=${PGWARDEN_DEMO_PASSWORD:-}
	db=${PGWARDEN_DEMO_DB:-postgres}
	say "Using the PostgreSQL server at $upstream"
else
	user=demo
	password=demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	db=demo
	port=$(free_port)
	cluster=$work/cluster
	say "Starting a throwaway PostgreSQL on 127.0.0.1:$port (scram-sha-256)"
	chown postgres "$work"
	printf '%s\n' "$password" >"$work/pw"
	chown postgres "$work/pw"
	runuser -u postgres -- "$pgbin/initdb" -D "$cluster" -U "$user" --pwfile="$work/pw" \
		--auth=scram-sha-256 >/dev/null
	runuser -u postgres -- "$pgbin/pg_ctl" -D "$cluster" -l "$work/postgres.log" -w \
		-o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
	PGPASSWORD=$password psql -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres \
		-c "CREATE DATABASE $db" >/dev/null
	upstream=127.0.0.1:$port
fi

upstream_host=${upstream%:*}
upstream_port=${upstream##*:}
export PGPASSWORD="$password"
say "Demo tables, created straight on the server: patients (with an SSN column) and payroll"
psql -q -h "$upstream_host" -p "$upstream_port" -U "$user" -d "$db" -v ON_ERROR_STOP=1 <<'SQL'
DROP TABLE IF EXISTS pgwarden_demo_patients, pgwarden_demo_payroll;
CREATE TABLE pgwarden_demo_patients (id int PRIMARY KEY, name text, ssn text);
INSERT INTO pgwarden_demo_patients VALUES (1, 'Ada Lovelace', '078-05-1120'),
  (2, 'Alan Turing', '219-09-9999');
CREATE TABLE pgwarden_demo_payroll (name text, salary int);
INSERT INTO pgwarden_demo_payroll VALUES ('Ada Lovelace', 100000);
SQL

say "pgwarden's settings: TLS for clients, a policy, a signed audit trail"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj /CN=localhost -keyout "$work/relay.key" -out "$work/relay.crt" 2>/dev/null
chmod 600 "$work/relay.key"
"$top/$build/pgwardenctl" audit keygen --out "$work/audit.key" >/dev/null
# Masking reads the catalog (which columns are which) on a connection of its own.
printf '"%s" "%s"\n' "$user" "$password" >"$work/catalog.pw"
chmod 600 "$work/catalog.pw"
mkdir -m 700 "$work/audit"
cat >"$work/policy.yaml" <<EOF
rules:
  - name: demo-app
    match: { user: $user }
    allow: [read, write, transaction, session]
    relations:
      deny: [public.pgwarden_demo_payroll]
    mask:
      public.pgwarden_demo_patients.ssn: partial-last-4
EOF
cat "$work/policy.yaml"

listen_port=$(free_port)
steer_port=$(free_port)
say "Starting pgwardend: listen 127.0.0.1:$listen_port (and 127.0.0.1:$steer_port for steered clients), upstream $upstream"
"$daemon" --listen "127.0.0.1:$listen_port" --listen "127.0.0.1:$steer_port" --upstream "$upstream" \
	--admin-socket "$work/admin.sock" --steer-instance "$instance" \
	--tls-client-mode prefer --tls-client-cert-file "$work/relay.crt" \
	--tls-client-key-file "$work/relay.key" --policy "$work/policy.yaml" \
	--audit-path "$work/audit/audit.jsonl" --audit-signing-key "$work/audit.key" \
	--mask-catalog-user "$user" --mask-catalog-database "$db" \
	--mask-catalog-passwords "$work/catalog.pw" \
	2>"$work/pgwardend.log" &
relay_pid=$!
for _ in $(seq 50); do
	grep -q 'event=started' "$work/pgwardend.log" 2>/dev/null && break
	kill -0 "$relay_pid" 2>/dev/null || { cat "$work/pgwardend.log"; exit 1; }
	sleep 0.1
done
cat "$work/pgwardend.log"

say "A psql session through pgwarden, over TLS: the SSN column arrives masked"
PGAPPNAME=pgwarden-demo PGSSLMODE=require psql -h 127.0.0.1 -p "$listen_port" -U "$user" \
	-d "$db" -v ON_ERROR_STOP=1 <<'SQL'
\conninfo
\set ECHO queries
SELECT id, name, ssn FROM pgwarden_demo_patients ORDER BY id;
UPDATE pgwarden_demo_patients SET name = 'Ada King' WHERE id = 1;
SQL

say "A statement the policy denies never reaches the server"
PGAPPNAME=pgwarden-demo psql -h 127.0.0.1 -p "$listen_port" -U "$user" -d "$db" \
	-c "SELECT * FROM pgwarden_demo_payroll" || true
say "A statement the server rejects: a masked session gets its SQLSTATE, the details withheld"
psql -h 127.0.0.1 -p "$listen_port" -U "$user" -d "$db" -c "SELECT 1/0" || true

say "pgwarden's session log for these sessions"
sleep 0.2
grep -E 'event=session_(start|end)' "$work/pgwardend.log" || true

say "The audit trail: the denied statement's record"
grep 'pgwarden_demo_payroll' "$work/audit/audit.jsonl" | tail -n 1 || true

say "Transparent mode: attach to a throwaway cgroup and connect to PostgreSQL's own port"
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
if [ -z "$cg2" ]; then
	echo "(skipped: no cgroup v2 mount on this host)"
else
	cgroup=$cg2/pgwarden-demo-$$
	mkdir "$cgroup"
	if "$top/$build/pgwardenctl" attach --instance "$instance" --cgroup "$cgroup" \
		--port "$upstream_port" --relay "127.0.0.1:$steer_port"; then
		echo "psql in that cgroup dials $upstream_host:$upstream_port, the server itself:"
		PGAPPNAME=pgwarden-demo-steered sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' \
			sh "$cgroup" psql -h "$upstream_host" -p "$upstream_port" -U "$user" -d "$db" \
			-c "SELECT id, name, ssn FROM pgwarden_demo_patients WHERE id = 2"
		sleep 0.2
		echo "pgwarden saw it, with the process the kernel recorded:"
		grep 'event=session_start' "$work/pgwardend.log" | grep 'route="steered"' || true
		echo "pgwardenctl status while attached:"
		PGWARDEN_INSTANCE=$instance "$top/$build/pgwardenctl" --socket "$work/admin.sock" \
			status || true
		"$top/$build/pgwardenctl" detach --instance "$instance"
	else
		echo "(attach failed: see the line above; explicit mode still works)"
	fi
	rmdir "$cgroup" 2>/dev/null || true
	cgroup=""
fi

say "The live view: pgwardenctl sessions and pgwarden-top (one snapshot)"
PGAPPNAME=pgwarden-demo-live psql -h 127.0.0.1 -p "$listen_port" -U "$user" -d "$db" \
	-c "SELECT pg_sleep(3)" >/dev/null &
live=$!
sleep 1
"$top/$build/pgwardenctl" --socket "$work/admin.sock" sessions || true
"$top/$build/pgwarden-top" --socket "$work/admin.sock" -b -n 1 --width 120 || true
wait "$live" || true
echo "While pgwardend runs, the live screen is: pgwarden-top --socket $work/admin.sock"

psql -q -h "$upstream_host" -p "$upstream_port" -U "$user" -d "$db" \
	-c "DROP TABLE IF EXISTS pgwarden_demo_patients, pgwarden_demo_payroll" || true

say "Draining pgwardend (SIGTERM)"
kill -TERM "$relay_pid"
wait "$relay_pid" || true
relay_pid=""
tail -n 2 "$work/pgwardend.log"
say "The audit trail, verified offline with the public key (signed to its last record at the drain)"
"$top/$build/pgwardenctl" audit verify --public-key "$work/audit.key.pub" \
	"$work"/audit/audit*.jsonl*
say "Demo finished; everything it started has been stopped."
