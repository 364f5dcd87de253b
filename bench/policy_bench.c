/*
 * policy_bench: what the policy stage costs per statement, on one core, as the relay runs it
 * (stage_run_frontend through the stage chain), with a realistic ten-rule policy and
 * relation lists. No network, no server: the stage alone.
 *
 *   policy_bench [SECONDS [WORKLOAD]]
 *
 * Workloads, pgbench's select-only statement in each protocol:
 *   parse     an unnamed Parse of the same text each time, then Bind/Execute
 *             (pgbench -M extended; drivers that do not name statements);
 *   execute   Bind and Execute of a named statement prepared once (pgbench -M prepared);
 *   query     simple Query, a new literal every time (pgbench -M simple);
 * and tpcb, pgbench's tpcb-like transaction (BEGIN, three UPDATEs, a SELECT, an INSERT,
 * END) as simple Queries with new literals every time, deltas of both signs.
 * Prints nanoseconds per statement for each (or for WORKLOAD alone: one to profile).
 */
#include "policy/policy.h"
#include "proto/proto.h"
#include "session/session.h"
#include "session/stmt.h"
#include "stage/stage.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char policy_text[] =
	"version: 1\n"
	"rules:\n"
	"  - name: r0\n    match: { user: u0 }\n    allow: [read]\n"
	"  - name: r1\n    match: { user: u1, database: d1 }\n    allow: [read, write]\n"
	"  - name: r2\n    match: { user: u2 }\n    allow: [read]\n    relations: { allow: [s2.*] }\n"
	"  - name: r3\n    match: { user: u3, application_name: a3 }\n    allow: [all]\n"
	"  - name: r4\n    match: { user: u4 }\n    allow: [read, transaction]\n"
	"  - name: r5\n    match: { user: u5, source: 10.0.0.0/8 }\n    allow: [read]\n"
	"  - name: r6\n    match: { user: u6 }\n    allow: [ddl]\n"
	"  - name: r7\n    match: { user: u7 }\n    allow: [read, write, transaction]\n"
	"  - name: r8\n    match: { user: u8 }\n    allow: [read]\n"
	"  - name: bench\n    match: { user: bench }\n"
	"    allow: [read, write, transaction, prepare, session]\n"
	"    relations:\n"
	"      allow: [public.pgbench_accounts, public.pgbench_branches, public.pgbench_tellers,\n"
	"              public.pgbench_history]\n"
	"      deny: [public.secrets, hr.*]\n"
	"    search_path: [public]\n"
	"    deny_functions: [\"@dangerous\"]\n";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t buf[4096];

static struct proto_msg msg2(uint8_t type, const char *a, size_t la, const char *b, size_t lb)
{
	memcpy(buf, a, la);
	if (b)
		memcpy(buf + la, b, lb);
	return (struct proto_msg){.type = type, .body_len = (uint32_t)(la + lb), .body = buf};
}

/* The n-th statement of a run of pgbench's tpcb-like transactions, literals as pgbench -M
 * simple writes them (a delta in [-5000, 5000]). */
static int tpcb_statement(char *sql, size_t cap, unsigned long n)
{
	unsigned long tx = n / 7, aid = tx * 7919 % 100000 + 1, tid = tx % 10 + 1;
	long delta = (long)(tx * 4657 % 10001) - 5000;

	switch (n % 7) {
	case 0:
		return snprintf(sql, cap, "BEGIN;");
	case 1:
		return snprintf(sql, cap, "UPDATE pgbench_accounts SET abalance = abalance + %ld "
					  "WHERE aid = %lu;", delta, aid);
	case 2:
		return snprintf(sql, cap, "SELECT abalance FROM pgbench_accounts WHERE aid = %lu;",
				aid);
	case 3:
		return snprintf(sql, cap, "UPDATE pgbench_tellers SET tbalance = tbalance + %ld "
					  "WHERE tid = %lu;", delta, tid);
	case 4:
		return snprintf(sql, cap, "UPDATE pgbench_branches SET bbalance = bbalance + %ld "
					  "WHERE bid = 1;", delta);
	case 5:
		return snprintf(sql, cap, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
					  "VALUES (%lu, 1, %lu, %ld, CURRENT_TIMESTAMP);", tid, aid,
				delta);
	default:
		return snprintf(sql, cap, "END;");
	}
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	char err[POLICY_ERR_MAX], sql[160];
	struct policy *p = policy_load_buffer("bench", policy_text, sizeof(policy_text) - 1, err,
					      sizeof(err));
	struct session s;
	struct stage_pipeline pl;
	struct stage_chain ch;
	struct stmt_table stmts;
	struct stage_limits limits;
	struct stage_result r;
	struct stage_note auth = {.kind = STAGE_NOTE_AUTH};
	static const char text[] = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
	static const char bind[] = "\0\0\0\0\0\0\0\0"; /* portal "", statement "", no formats */
	const char *names[] = {"parse", "execute", "query", "tpcb"};
	const char *only = argc > 2 ? argv[2] : NULL;

	if (!p) {
		fprintf(stderr, "policy_bench: %s\n", err);
		return 2;
	}
	policy_publish(p);
	memset(&s, 0, sizeof(s));
	memset(&pl, 0, sizeof(pl));
	memset(&stmts, 0, sizeof(stmts));
	memset(&limits, 0, sizeof(limits));
	s.user = "bench";
	s.database = "bench";
	((struct sockaddr_in *)&s.client.ss)->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.9", &((struct sockaddr_in *)&s.client.ss)->sin_addr);
	snprintf(s.id_hex, sizeof(s.id_hex), "00112233445566778899aabbccddeeff");
	if (stage_pipeline_add(&pl, &policy_stage) ||
	    stage_chain_init(&ch, &pl, &s, &stmts, NULL))
		return 2;
	stage_run_session_start(&ch, &limits, 1, &r);
	if (session_set_verified(&s, SESSION_AUTH_SCRAM, false, s.user))
		return 2;
	stage_run_notice(&ch, &auth, &limits, 2);
	/* the named statement of the prepared workload, as the tracker would hold it */
	{
		uint32_t words[STAGE_MAX] = {0};
		struct proto_msg m = msg2(PqMsg_Parse, "P0", 3, text, sizeof(text));
		struct stmt_entry *e;

		stage_run_frontend(&ch, &m, 1, words, 3, &r);
		e = stmt_new("P0", text, sizeof(text) - 1, 0, false);
		if (!e || r.verdict != STAGE_FORWARD)
			return 2;
		memcpy(e->words, words, sizeof(e->words));
		stmt_commit(&stmts, e);
		/* what each Bind makes: the unnamed portal that Execute runs */
		if (stmt_portal_bind(&stmts, "", e))
			return 2;
	}
	for (int w = 0; w < 4; w++) {
		unsigned long n = 0;
		double t0 = now_s(), t;

		if (only && strcmp(only, names[w]))
			continue;
		do {
			for (int i = 0; i < 1000; i++, n++) {
				struct proto_msg m;
				uint32_t words[STAGE_MAX] = {0};

				if (w == 0) {
					m = msg2(PqMsg_Parse, "", 1, text, sizeof(text));
					stage_run_frontend(&ch, &m, n, words, 4, &r);
					m = msg2(PqMsg_Bind, bind, 8, NULL, 0);
					stage_run_frontend(&ch, &m, n, NULL, 4, &r);
				} else if (w == 1) {
					m = msg2(PqMsg_Bind, "\0P0\0\0\0\0\0\0", 9, NULL, 0);
					stage_run_frontend(&ch, &m, n, NULL, 4, &r);
					if (r.verdict == STAGE_FORWARD) {
						m = msg2(PqMsg_Execute, "\0\0\0\0\0", 5, NULL, 0);
						stage_run_frontend(&ch, &m, n, NULL, 4, &r);
					}
				} else {
					int len = w == 2 ? snprintf(sql, sizeof(sql),
								    "SELECT abalance FROM "
								    "pgbench_accounts WHERE aid = %lu;",
								    n * 7919 % 100000)
							 : tpcb_statement(sql, sizeof(sql), n);

					m = msg2(PqMsg_Query, sql, (size_t)len + 1, NULL, 0);
					stage_run_frontend(&ch, &m, n, words, 4, &r);
				}
				if (r.verdict != STAGE_FORWARD) {
					fprintf(stderr, "policy_bench: %s denied: %s\n", names[w],
						r.message);
					return 1;
				}
			}
			t = now_s() - t0;
		} while (t < secs);
		printf("%-8s %8.0f ns/statement  (%lu statements)\n", names[w], t * 1e9 / (double)n,
		       n);
	}
	stage_chain_end(&ch, true);
	stmt_table_release(&stmts);
	return 0;
}
