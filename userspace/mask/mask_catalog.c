/* mask_catalog: the resolution query, its result, and lookups (see mask_catalog.h). */
#include "mask/mask_catalog.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mask_table {
	uint32_t oid;
	char *nsp, *rel;
	/* live attributes in attnum order (dropped ones are not listed) */
	int16_t *attnums;
	char **attnames;
	uint8_t *generated;
	unsigned nattrs, cap;
};

struct mask_derived {
	uint32_t relid;
	uint32_t *cols;
	unsigned ncols;
};

struct mask_clean_rel {
	uint32_t oid;
	char *nsp, *rel;
	bool everywhere; /* every relation of this relname in the database is clean */
};

/*
 * Built-ins that compute from their arguments alone: they read no table, run no SQL text,
 * read no file and no session state a statement could have filled from masked data
 * (current_setting is left out: set_config() can copy a masked value into a setting).
 * Sorted (bsearch). Each is clean only while no function of that name exists outside
 * pg_catalog (a role that puts its schema first on search_path could shadow it).
 */
static const char *const safe_functions[] = {
	"abs", "age", "array_length", "array_lower", "array_to_string", "array_upper", "avg",
	"bit_and", "bit_or", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "ceil",
	"ceiling", "char_length", "character_length", "chr", "clock_timestamp", "concat",
	"concat_ws", "count", "current_database", "current_schema", "date_part", "date_trunc",
	"degrees", "div", "every", "exp", "floor", "format", "gcd", "generate_series",
	"initcap", "isfinite", "justify_days", "justify_hours", "justify_interval", "lcm",
	"left", "length", "ln", "log", "log10", "lower", "lpad", "ltrim", "make_date",
	"make_interval", "make_time", "make_timestamp", "make_timestamptz", "max", "md5",
	"min", "mod", "now", "octet_length", "pg_backend_pid", "pg_postmaster_start_time",
	"pi", "power", "quote_ident", "quote_literal", "quote_nullable", "radians", "random",
	"repeat", "replace", "reverse", "right", "round", "rpad", "rtrim", "scale", "sign",
	"split_part", "sqrt", "statement_timestamp", "stddev", "stddev_pop", "stddev_samp",
	"string_to_array", "strpos", "substr", "sum", "timeofday", "to_char", "to_date",
	"to_number", "to_timestamp", "transaction_timestamp", "translate", "trunc", "upper",
	"var_pop", "var_samp", "variance", "version", "width_bucket",
};
#define NSAFE (sizeof(safe_functions) / sizeof(safe_functions[0]))

struct mask_catalog {
	atomic_uint refs;
	struct mask_policy *policy;
	struct mask_column *columns;
	unsigned ncolumns, columns_cap;
	/* open addressing over columns: index + 1, 0 empty */
	uint32_t *slots;
	unsigned nslots;
	struct mask_derived *derived;
	unsigned nderived, derived_cap;
	struct mask_table *tables;
	unsigned ntables, tables_cap;
	char **warnings;
	unsigned nwarnings, warnings_cap;
	/* relations a computed column may be read from in clear (mask_catalog_relation_clean):
	 * sorted by (rel, nsp); valid only when clean_known */
	struct mask_clean_rel *clean;
	unsigned nclean, clean_cap;
	bool clean_known;
	uint32_t *clean_oids; /* the same relations' OIDs, sorted */
	/* whitelisted function names also defined outside pg_catalog (whitelist order) */
	bool shadowed[NSAFE];
	/* the database has operators or casts whose code is not pg_catalog's or an
	 * extension's: any expression may call them. True until the query says otherwise. */
	bool code_hooks;
	uint64_t generation;
};

struct mask_catalog_builder {
	struct mask_catalog *c;
	/* attribute rows seen before their table row: kept until finish */
	struct {
		uint32_t relid;
		int16_t attnum;
		char *name;
		uint8_t generated;
	} *attrs;
	unsigned nattrs, attrs_cap;
	bool *missing; /* per policy column: the query said it names nothing */
	bool saw_hooks; /* the 'h' row came (exactly one does) */
};

/* ---- the query -------------------------------------------------------------------------- */

#define EQ " OPERATOR(pg_catalog.=) "
#define T "::pg_catalog.text"

static const char query_head[] = "WITH RECURSIVE\nrule(idx, nsp, rel, col) AS (VALUES\n";

/* After the VALUES list. Every operator is OPERATOR(pg_catalog.x): a role may create its
 * own operators in a schema it puts first on search_path; these cannot be redirected. */
static const char query_tail[] =
	"),\n"
	"named AS (SELECT r.idx, c.oid AS relid, a.attname FROM rule r\n"
	" JOIN pg_catalog.pg_namespace n ON n.nspname" EQ "r.nsp\n"
	" JOIN pg_catalog.pg_class c ON c.relnamespace" EQ "n.oid AND c.relname" EQ "r.rel\n"
	" JOIN pg_catalog.pg_attribute a ON a.attrelid" EQ "c.oid AND a.attname" EQ "r.col\n"
	"  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped),\n"
	"down(idx, relid, attname) AS (SELECT idx, relid, attname FROM named\n"
	" UNION SELECT d.idx, i.inhrelid, d.attname FROM down d\n"
	" JOIN pg_catalog.pg_inherits i ON i.inhparent" EQ "d.relid),\n"
	"up(idx, relid, attname) AS (SELECT idx, relid, attname FROM named\n"
	" UNION SELECT u.idx, i.inhparent, u.attname FROM up u\n"
	" JOIN pg_catalog.pg_inherits i ON i.inhrelid" EQ "u.relid),\n"
	"cols AS (SELECT DISTINCT x.idx, x.relid, a.attnum, a.atttypid, a.atttypmod,\n"
	"  EXISTS (SELECT 1 FROM named m WHERE m.idx" EQ "x.idx AND m.relid" EQ "x.relid) AS direct\n"
	" FROM (SELECT * FROM down UNION SELECT * FROM up) x\n"
	" JOIN pg_catalog.pg_attribute a ON a.attrelid" EQ "x.relid AND a.attname" EQ "x.attname\n"
	"  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped),\n"
	"dom(idx, relid, attnum, typ, typmod, depth) AS (\n"
	" SELECT idx, relid, attnum, atttypid, atttypmod, 0 FROM cols\n"
	" UNION ALL SELECT d.idx, d.relid, d.attnum, t.typbasetype, t.typtypmod,\n"
	"  d.depth OPERATOR(pg_catalog.+) 1\n"
	" FROM dom d JOIN pg_catalog.pg_type t ON t.oid" EQ "d.typ\n"
	" WHERE t.typtype" EQ "'d' AND d.depth OPERATOR(pg_catalog.<) 32),\n"
	"base AS (SELECT DISTINCT ON (idx, relid, attnum) idx, relid, attnum, typ, typmod\n"
	" FROM dom ORDER BY idx, relid, attnum, depth DESC),\n"
	"edom(idx, relid, attnum, typ, typmod, depth) AS (\n"
	" SELECT b.idx, b.relid, b.attnum, t.typelem, -1, 0 FROM base b\n"
	" JOIN pg_catalog.pg_type t ON t.oid" EQ "b.typ WHERE t.typcategory" EQ "'A'\n"
	" UNION ALL SELECT e.idx, e.relid, e.attnum, t.typbasetype, t.typtypmod,\n"
	"  e.depth OPERATOR(pg_catalog.+) 1\n"
	" FROM edom e JOIN pg_catalog.pg_type t ON t.oid" EQ "e.typ\n"
	" WHERE t.typtype" EQ "'d' AND e.depth OPERATOR(pg_catalog.<) 32),\n"
	"ebase AS (SELECT DISTINCT ON (idx, relid, attnum) idx, relid, attnum, typ, typmod\n"
	" FROM edom ORDER BY idx, relid, attnum, depth DESC),\n"
	"vdep(idx, relid) AS (SELECT c.idx, rw.ev_class FROM cols c\n"
	" JOIN pg_catalog.pg_depend d ON d.refclassid" EQ "'pg_catalog.pg_class'::pg_catalog.regclass\n"
	"  AND d.refobjid" EQ "c.relid AND d.refobjsubid" EQ "c.attnum\n"
	"  AND d.classid" EQ "'pg_catalog.pg_rewrite'::pg_catalog.regclass\n"
	" JOIN pg_catalog.pg_rewrite rw ON rw.oid" EQ "d.objid\n"
	" WHERE rw.ev_class OPERATOR(pg_catalog.<>) c.relid AND rw.ev_type" EQ "'1'\n"
	/* planner statistics hold sampled values of every column, masked ones included */
	" UNION SELECT r.idx, s.oid FROM rule r CROSS JOIN pg_catalog.pg_class s\n"
	" WHERE s.relnamespace" EQ "'pg_catalog'::pg_catalog.regnamespace AND s.relname" EQ "ANY\n"
	"  ('{pg_statistic,pg_statistic_ext,pg_statistic_ext_data,pg_stats,pg_stats_ext,"
	"pg_stats_ext_exprs}'::pg_catalog.name[])\n"
	" UNION SELECT v.idx, rw.ev_class FROM vdep v\n"
	" JOIN pg_catalog.pg_depend d ON d.refclassid" EQ "'pg_catalog.pg_class'::pg_catalog.regclass\n"
	"  AND d.refobjid" EQ "v.relid\n"
	"  AND d.classid" EQ "'pg_catalog.pg_rewrite'::pg_catalog.regclass\n"
	" JOIN pg_catalog.pg_rewrite rw ON rw.oid" EQ "d.objid\n"
	" WHERE rw.ev_class OPERATOR(pg_catalog.<>) v.relid AND rw.ev_type" EQ "'1'),\n"
	/* every relation in an inheritance tree with a masked table, siblings included */
	"tree(relid) AS (SELECT relid FROM named\n"
	" UNION SELECT CASE WHEN i.inhparent" EQ "t.relid THEN i.inhrelid ELSE i.inhparent END\n"
	" FROM tree t JOIN pg_catalog.pg_inherits i\n"
	"  ON i.inhparent" EQ "t.relid OR i.inhrelid" EQ "t.relid),\n"
	"clean(oid, nsp, rel) AS (SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c\n"
	" JOIN pg_catalog.pg_namespace n ON n.oid" EQ "c.relnamespace\n"
	" WHERE c.relkind" EQ "ANY ('{r,p}'::pg_catalog.\"char\"[])\n"
	"  AND NOT EXISTS (SELECT 1 FROM tree t WHERE t.relid" EQ "c.oid)\n"
	"  AND NOT EXISTS (SELECT 1 FROM vdep v WHERE v.relid" EQ "c.oid))\n"
	"SELECT 'c', b.idx" T ", b.relid" T ", b.attnum" T ", b.typ" T ",\n"
	" (CASE WHEN b.typmod" EQ "-1 AND e.typmod IS NOT NULL THEN e.typmod ELSE b.typmod END)" T ",\n"
	" t.typname" T ", (t.typcategory" EQ "'A')" T ", e.typ" T ", et.typname" T ",\n"
	" c.direct" T ", NULL" T ", NULL" T "\n"
	" FROM base b JOIN cols c USING (idx, relid, attnum)\n"
	" JOIN pg_catalog.pg_type t ON t.oid" EQ "b.typ\n"
	" LEFT JOIN ebase e USING (idx, relid, attnum)\n"
	" LEFT JOIN pg_catalog.pg_type et ON et.oid" EQ "e.typ\n"
	"UNION ALL SELECT 'v', idx" T ", relid" T ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" NULL, NULL FROM vdep\n"
	"UNION ALL SELECT 't', NULL, c.oid" T ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" n.nspname" T ", c.relname" T "\n"
	" FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid" EQ "c.relnamespace\n"
	" WHERE c.oid IN (SELECT relid FROM cols)\n"
	"UNION ALL SELECT 'a', NULL, a.attrelid" T ", a.attnum" T ", NULL, NULL, NULL, NULL, NULL,\n"
	" NULL, (a.attgenerated OPERATOR(pg_catalog.<>) '')" T ", NULL, a.attname" T "\n"
	" FROM pg_catalog.pg_attribute a WHERE a.attrelid IN (SELECT relid FROM cols)\n"
	"  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped\n"
	"UNION ALL SELECT 'm', r.idx" T ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" NULL, NULL FROM rule r\n"
	" WHERE NOT EXISTS (SELECT 1 FROM named m WHERE m.idx" EQ "r.idx)\n"
	"UNION ALL SELECT 'h', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" (EXISTS (SELECT 1 FROM pg_catalog.pg_operator o\n"
	"  WHERE o.oprnamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace\n"
	"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d\n"
	"   WHERE d.classid" EQ "'pg_catalog.pg_operator'::pg_catalog.regclass\n"
	"   AND d.objid" EQ "o.oid AND d.deptype" EQ "'e'))\n"
	"  OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k\n"
	"  JOIN pg_catalog.pg_proc p ON p.oid" EQ "k.castfunc\n"
	"  WHERE p.pronamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace\n"
	"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d\n"
	"   WHERE d.classid" EQ "'pg_catalog.pg_proc'::pg_catalog.regclass\n"
	"   AND d.objid" EQ "p.oid AND d.deptype" EQ "'e')))" T ", NULL, NULL\n"
	"UNION ALL (SELECT 'k', NULL, k.oid" T ", NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" (NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class o WHERE o.relname" EQ "k.rel\n"
	"  AND NOT EXISTS (SELECT 1 FROM clean x WHERE x.oid" EQ "o.oid)))" T ",\n"
	" k.nsp" T ", k.rel" T " FROM clean k LIMIT ";

/* After the limit (MASK_CATALOG_CLEAN_MAX + 1: one more says the set is over the cap). */
static const char query_funcs[] =
	")\n"
	"UNION ALL SELECT DISTINCT 'f', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
	" NULL, NULL, p.proname" T " FROM pg_catalog.pg_proc p\n"
	" WHERE p.pronamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace\n"
	"  AND p.proname" EQ "ANY ('{";

/* After the list of safe function names. */
static const char query_end[] = "}'::pg_catalog.name[])\n";

static size_t safe_functions_len(void)
{
	size_t n = 0;

	for (unsigned i = 0; i < NSAFE; i++)
		n += strlen(safe_functions[i]) + 1;
	return n;
}

const char *mask_catalog_startup_options(void)
{
	return "-c search_path=pg_catalog";
}

/* `pg_catalog.convert_from(pg_catalog.decode('<hex>', 'hex'), 'UTF8')` */
static size_t put_name(char *p, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	static const char a[] = "pg_catalog.convert_from(pg_catalog.decode('";
	static const char b[] = "', 'hex'), 'UTF8')";
	size_t n = 0;

	memcpy(p, a, sizeof(a) - 1);
	n += sizeof(a) - 1;
	for (; *s; s++) {
		p[n++] = hex[(unsigned char)*s >> 4];
		p[n++] = hex[(unsigned char)*s & 15];
	}
	memcpy(p + n, b, sizeof(b) - 1);
	return n + sizeof(b) - 1;
}

char *mask_catalog_query(const struct mask_policy *mp, int *err)
{
	unsigned n = mask_policy_ncolumns(mp);
	/* per rule: "(idx, " + 3 names of at most 63 bytes in hex with their wrapping + "),\n" */
	size_t per = 16 + 3 * (2 * MASK_IDENT_MAX + 64);
	size_t cap = sizeof(query_head) + sizeof(query_tail) + 12 + sizeof(query_funcs) +
		     safe_functions_len() + sizeof(query_end) + (size_t)n * per;
	char *q, *p;

	if (!n) {
		*err = -ENODATA;
		return NULL;
	}
	q = malloc(cap);
	if (!q) {
		*err = -ENOMEM;
		return NULL;
	}
	p = q;
	memcpy(p, query_head, sizeof(query_head) - 1);
	p += sizeof(query_head) - 1;
	for (unsigned i = 0; i < n; i++) {
		const struct mask_colref *r = mask_policy_column(mp, i);

		p += sprintf(p, "%s(%u, ", i ? ",\n" : "", i);
		p += put_name(p, r->schema);
		*p++ = ',';
		*p++ = ' ';
		p += put_name(p, r->table);
		*p++ = ',';
		*p++ = ' ';
		p += put_name(p, r->column);
		*p++ = ')';
	}
	memcpy(p, query_tail, sizeof(query_tail) - 1);
	p += sizeof(query_tail) - 1;
	p += sprintf(p, "%u", MASK_CATALOG_CLEAN_MAX + 1u);
	memcpy(p, query_funcs, sizeof(query_funcs) - 1);
	p += sizeof(query_funcs) - 1;
	for (unsigned i = 0; i < NSAFE; i++)
		p += sprintf(p, "%s%s", i ? "," : "", safe_functions[i]);
	memcpy(p, query_end, sizeof(query_end));
	*err = 0;
	return q;
}

/* ---- building ----------------------------------------------------------------------------- */

/* Catalogs made so far: a catalog's generation orders it after every catalog made before
 * it, so a reader can ask for one whose query started after a given moment. */
static _Atomic uint64_t generations;

static struct mask_catalog *catalog_new(struct mask_policy *mp)
{
	struct mask_catalog *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	mask_policy_get(mp);
	c->policy = mp;
	c->code_hooks = true; /* until the query says there are none */
	c->generation = atomic_fetch_add(&generations, 1) + 1;
	return c;
}

struct mask_catalog_builder *mask_catalog_builder_new(struct mask_policy *mp)
{
	struct mask_catalog_builder *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->c = catalog_new(mp);
	b->missing = calloc(mask_policy_ncolumns(mp) + 1, sizeof(bool));
	if (!b->c || !b->missing) {
		mask_catalog_builder_free(b);
		return NULL;
	}
	return b;
}

void mask_catalog_builder_free(struct mask_catalog_builder *b)
{
	if (!b)
		return;
	mask_catalog_put(b->c);
	for (unsigned i = 0; i < b->nattrs; i++)
		free(b->attrs[i].name);
	free(b->attrs);
	free(b->missing);
	free(b);
}

int mask_catalog_builder_rowdesc(struct mask_catalog_builder *b, const struct proto_msg *m)
{
	struct proto_rowdesc_iter it;
	struct proto_column col;
	int rc;

	if (proto_rowdesc_begin(m, &it) != PROTO_OK || it.ncols != MASK_CATALOG_NCOLS)
		return -EPROTO;
	while ((rc = proto_rowdesc_next(&it, &col)) == 1)
		if (col.type_oid != MASK_OID_TEXT || col.format != 0)
			return -EPROTO;
	return rc == 0 ? 0 : -EPROTO;
}

/* Strict unsigned decimal in [0, max]. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > max)
			return false;
	}
	*out = v;
	return true;
}

static bool parse_int32(const char *s, int32_t *out)
{
	uint64_t v;

	if (s && s[0] == '-') {
		if (!parse_uint(s + 1, 2147483648u, &v))
			return false;
		*out = (int32_t)-(int64_t)v;
		return true;
	}
	if (!parse_uint(s, INT32_MAX, &v))
		return false;
	*out = (int32_t)v;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	if (s && strcmp(s, "true") == 0)
		*out = true;
	else if (s && strcmp(s, "false") == 0)
		*out = false;
	else
		return false;
	return true;
}

static int grow(void **p, unsigned *cap, unsigned need, size_t elem)
{
	void *np;
	unsigned ncap;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 8;
	while (ncap < need)
		ncap *= 2;
	np = realloc(*p, (size_t)ncap * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

static int add_warning(struct mask_catalog *c, const char *text)
{
	char *w = strdup(text);

	if (!w || grow((void **)&c->warnings, &c->warnings_cap, c->nwarnings + 1, sizeof(char *))) {
		free(w);
		return -ENOMEM;
	}
	c->warnings[c->nwarnings++] = w;
	return 0;
}

static struct mask_column *find_column_linear(struct mask_catalog *c, uint32_t oid, int16_t att)
{
	for (unsigned i = 0; i < c->ncolumns; i++)
		if (c->columns[i].table_oid == oid && c->columns[i].attnum == att)
			return &c->columns[i];
	return NULL;
}

static void classify(struct mask_type *t, uint32_t oid, const char *name)
{
	t->tc = mask_tclass_of_oid(oid);
	t->citext = false;
	if (t->tc == MASK_TC_OTHER && name && strcmp(name, "citext") == 0) {
		t->tc = MASK_TC_TEXT;
		t->citext = true;
	}
}

/* 'c': idx relid attnum typ typmod typname isarray elemtyp elemname direct */
static int row_column(struct mask_catalog_builder *b, const char **v)
{
	struct mask_catalog *c = b->c;
	uint64_t idx, relid, attnum, typ, elem = 0;
	int32_t typmod;
	bool array, direct;
	struct mask_column *col;
	struct mask_type t = {0};

	if (!parse_uint(v[1], mask_policy_ncolumns(c->policy) - 1, &idx) ||
	    !parse_uint(v[2], UINT32_MAX, &relid) || !parse_uint(v[3], INT16_MAX, &attnum) ||
	    attnum == 0 || !parse_uint(v[4], UINT32_MAX, &typ) || !parse_int32(v[5], &typmod) ||
	    !v[6] || !parse_bool(v[7], &array) || !parse_bool(v[10], &direct))
		return -EPROTO;
	if (array && (!parse_uint(v[8], UINT32_MAX, &elem) || !v[9]))
		return -EPROTO;
	t.array = array;
	t.typmod = typmod;
	if (array) {
		classify(&t, (uint32_t)elem, v[9]);
		t.elem_oid = (uint32_t)elem;
	} else {
		classify(&t, (uint32_t)typ, v[6]);
	}
	col = find_column_linear(c, (uint32_t)relid, (int16_t)attnum);
	if (!col) {
		if (grow((void **)&c->columns, &c->columns_cap, c->ncolumns + 1, sizeof(*col)))
			return -ENOMEM;
		col = &c->columns[c->ncolumns++];
		memset(col, 0, sizeof(*col));
		col->table_oid = (uint32_t)relid;
		col->attnum = (int16_t)attnum;
		col->type_oid = (uint32_t)typ;
		col->type = t;
	} else if (col->type_oid != typ) {
		return -EPROTO; /* one column, one type */
	}
	{
		uint32_t *nc = realloc(col->cols, (col->ncols + 1) * sizeof(*nc));
		uint8_t *nd;

		if (!nc)
			return -ENOMEM;
		col->cols = nc;
		nd = realloc(col->direct, col->ncols + 1);
		if (!nd)
			return -ENOMEM;
		col->direct = nd;
		/* direct references first */
		if (direct) {
			unsigned k = 0;

			while (k < col->ncols && col->direct[k])
				k++;
			memmove(col->cols + k + 1, col->cols + k, (col->ncols - k) * sizeof(*nc));
			memmove(col->direct + k + 1, col->direct + k, col->ncols - k);
			col->cols[k] = (uint32_t)idx;
			col->direct[k] = 1;
		} else {
			col->cols[col->ncols] = (uint32_t)idx;
			col->direct[col->ncols] = 0;
		}
		col->ncols++;
	}
	return 0;
}

/* 'v': idx relid */
static int row_derived(struct mask_catalog_builder *b, const char **v)
{
	struct mask_catalog *c = b->c;
	uint64_t idx, relid;
	struct mask_derived *d = NULL;
	uint32_t *nc;

	if (!parse_uint(v[1], mask_policy_ncolumns(c->policy) - 1, &idx) ||
	    !parse_uint(v[2], UINT32_MAX, &relid))
		return -EPROTO;
	for (unsigned i = 0; i < c->nderived; i++)
		if (c->derived[i].relid == relid)
			d = &c->derived[i];
	if (!d) {
		if (grow((void **)&c->derived, &c->derived_cap, c->nderived + 1, sizeof(*d)))
			return -ENOMEM;
		d = &c->derived[c->nderived++];
		memset(d, 0, sizeof(*d));
		d->relid = (uint32_t)relid;
	}
	for (unsigned i = 0; i < d->ncols; i++)
		if (d->cols[i] == idx)
			return 0;
	nc = realloc(d->cols, (d->ncols + 1) * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	d->cols = nc;
	d->cols[d->ncols++] = (uint32_t)idx;
	return 0;
}

/* 't': relid, nspname (v[11]), relname (v[12]) */
static int row_table(struct mask_catalog_builder *b, const char **v)
{
	struct mask_catalog *c = b->c;
	struct mask_table *t;
	uint64_t relid;

	if (!parse_uint(v[2], UINT32_MAX, &relid) || !v[11] || !v[12])
		return -EPROTO;
	for (unsigned i = 0; i < c->ntables; i++)
		if (c->tables[i].oid == relid)
			return -EPROTO;
	if (grow((void **)&c->tables, &c->tables_cap, c->ntables + 1, sizeof(*t)))
		return -ENOMEM;
	t = &c->tables[c->ntables];
	memset(t, 0, sizeof(*t));
	t->oid = (uint32_t)relid;
	t->nsp = strdup(v[11]);
	t->rel = strdup(v[12]);
	c->ntables++;
	if (!t->nsp || !t->rel)
		return -ENOMEM;
	return 0;
}

/* 'a': relid attnum generated (v[10]) attname (v[12]) */
static int row_attr(struct mask_catalog_builder *b, const char **v)
{
	uint64_t relid, attnum;
	bool gen;
	char *name;

	if (!parse_uint(v[2], UINT32_MAX, &relid) || !parse_uint(v[3], INT16_MAX, &attnum) ||
	    attnum == 0 || !parse_bool(v[10], &gen) || !v[12])
		return -EPROTO;
	if (grow((void **)&b->attrs, &b->attrs_cap, b->nattrs + 1, sizeof(*b->attrs)))
		return -ENOMEM;
	name = strdup(v[12]);
	if (!name)
		return -ENOMEM;
	b->attrs[b->nattrs].relid = (uint32_t)relid;
	b->attrs[b->nattrs].attnum = (int16_t)attnum;
	b->attrs[b->nattrs].name = name;
	b->attrs[b->nattrs].generated = gen;
	b->nattrs++;
	return 0;
}

/* 'h': whether operators or casts run code outside pg_catalog and extensions (v[10]) */
static int row_hooks(struct mask_catalog_builder *b, const char **v)
{
	bool hooks;

	if (b->saw_hooks || !parse_bool(v[10], &hooks))
		return -EPROTO;
	b->saw_hooks = true;
	b->c->code_hooks = hooks;
	return 0;
}

/* 'k': a clean relation: relid (v[2]), everywhere (v[10]), nspname (v[11]), relname
 * (v[12]). Rows past MASK_CATALOG_CLEAN_MAX are counted, not kept: finish() drops the set. */
static int row_clean(struct mask_catalog_builder *b, const char **v)
{
	struct mask_catalog *c = b->c;
	struct mask_clean_rel *k;
	bool everywhere;
	uint64_t relid;

	if (!parse_uint(v[2], UINT32_MAX, &relid) || !parse_bool(v[10], &everywhere) || !v[11] ||
	    !v[12])
		return -EPROTO;
	if (c->nclean >= MASK_CATALOG_CLEAN_MAX) {
		c->nclean = MASK_CATALOG_CLEAN_MAX + 1;
		return 0;
	}
	if (grow((void **)&c->clean, &c->clean_cap, c->nclean + 1, sizeof(*k)))
		return -ENOMEM;
	k = &c->clean[c->nclean];
	k->oid = (uint32_t)relid;
	k->nsp = strdup(v[11]);
	k->rel = strdup(v[12]);
	k->everywhere = everywhere;
	c->nclean++;
	if (!k->nsp || !k->rel)
		return -ENOMEM;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int safe_index(const char *name)
{
	const char *const *k = bsearch(&name, safe_functions, NSAFE, sizeof(*safe_functions), cmp_str);

	return k ? (int)(k - safe_functions) : -1;
}

/* 'f': a safe function's name (v[12]) also defined outside pg_catalog */
static int row_shadow(struct mask_catalog_builder *b, const char **v)
{
	int i = v[12] ? safe_index(v[12]) : -1;

	if (i < 0)
		return -EPROTO; /* the query asks only about the safe names */
	b->c->shadowed[i] = true;
	return 0;
}

int mask_catalog_builder_row(struct mask_catalog_builder *b, const struct proto_msg *m)
{
	struct proto_datarow_iter it;
	/* Values are NUL-terminated copies: the row's bytes are not. */
	char buf[MASK_CATALOG_NCOLS][256];
	const char *v[MASK_CATALOG_NCOLS];
	const uint8_t *val;
	int32_t len;
	unsigned i = 0;
	int rc;

	if (proto_datarow_begin(m, &it) != PROTO_OK || it.ncols != MASK_CATALOG_NCOLS)
		return -EPROTO;
	while ((rc = proto_datarow_next(&it, &val, &len)) == 1) {
		if (len < 0) {
			v[i++] = NULL;
			continue;
		}
		/* identifiers are at most 63 bytes, numbers shorter still */
		if ((size_t)len >= sizeof(buf[0]) || memchr(val, 0, (size_t)len))
			return -EPROTO;
		memcpy(buf[i], val, (size_t)len);
		buf[i][len] = '\0';
		v[i] = buf[i];
		i++;
	}
	if (rc != 0 || !v[0] || strlen(v[0]) != 1)
		return -EPROTO;
	switch (v[0][0]) {
	case 'c':
		return row_column(b, v);
	case 'v':
		return row_derived(b, v);
	case 't':
		return row_table(b, v);
	case 'a':
		return row_attr(b, v);
	case 'h':
		return row_hooks(b, v);
	case 'k':
		return row_clean(b, v);
	case 'f':
		return row_shadow(b, v);
	case 'm': {
		uint64_t idx;

		if (!parse_uint(v[1], mask_policy_ncolumns(b->c->policy) - 1, &idx))
			return -EPROTO;
		b->missing[idx] = true;
		return 0;
	}
	default:
		return -EPROTO;
	}
}

static uint32_t slot_hash(uint32_t oid, int16_t attnum)
{
	uint32_t h = oid * 2654435761u ^ ((uint32_t)(uint16_t)attnum * 40503u);

	return h ^ (h >> 15);
}

static int build_slots(struct mask_catalog *c)
{
	unsigned n = 16;

	while (n < 2 * c->ncolumns)
		n *= 2;
	c->slots = calloc(n, sizeof(*c->slots));
	if (!c->slots)
		return -ENOMEM;
	c->nslots = n;
	for (unsigned i = 0; i < c->ncolumns; i++) {
		unsigned s = slot_hash(c->columns[i].table_oid, c->columns[i].attnum) & (n - 1);

		while (c->slots[s])
			s = (s + 1) & (n - 1);
		c->slots[s] = i + 1;
	}
	return 0;
}

static int attach_attrs(struct mask_catalog_builder *b)
{
	struct mask_catalog *c = b->c;

	for (unsigned i = 0; i < b->nattrs; i++) {
		struct mask_table *t = NULL;
		unsigned k;

		for (unsigned j = 0; j < c->ntables; j++)
			if (c->tables[j].oid == b->attrs[i].relid)
				t = &c->tables[j];
		if (!t)
			continue; /* a relation the query listed no name for: nothing copies it */
		if (grow((void **)&t->attnums, &t->cap, t->nattrs + 1, sizeof(int16_t)))
			return -ENOMEM;
		{
			unsigned cap = t->cap;
			char **nn = realloc(t->attnames, cap * sizeof(char *));
			uint8_t *ng;

			if (!nn)
				return -ENOMEM;
			t->attnames = nn;
			ng = realloc(t->generated, cap);
			if (!ng)
				return -ENOMEM;
			t->generated = ng;
		}
		/* keep attnum order */
		k = t->nattrs;
		while (k > 0 && t->attnums[k - 1] > b->attrs[i].attnum) {
			t->attnums[k] = t->attnums[k - 1];
			t->attnames[k] = t->attnames[k - 1];
			t->generated[k] = t->generated[k - 1];
			k--;
		}
		t->attnums[k] = b->attrs[i].attnum;
		t->attnames[k] = b->attrs[i].name;
		t->generated[k] = b->attrs[i].generated;
		b->attrs[i].name = NULL; /* owned by the table now */
		t->nattrs++;
	}
	return 0;
}

static int check_strategies(struct mask_catalog *c, const bool *missing)
{
	const struct mask_policy *mp = c->policy;
	char name[MASK_COLREF_STRLEN], line[MASK_COLREF_STRLEN + 256], st[MASK_STRATEGY_STRLEN];

	for (unsigned i = 0; i < mask_policy_ncolumns(mp); i++) {
		if (!missing[i])
			continue;
		snprintf(line, sizeof(line), "masked column %s: no such table or column (yet); "
			 "nothing is masked for it until it exists and the catalog is refreshed",
			 mask_colref_format(mask_policy_column(mp, i), name, sizeof(name)));
		if (add_warning(c, line))
			return -ENOMEM;
	}
	for (unsigned i = 0; i < c->ncolumns; i++) {
		const struct mask_column *col = &c->columns[i];

		for (unsigned r = 0; r < col->ncols; r++) {
			if (!col->direct[r])
				continue;
			for (unsigned p = 0; p < mask_policy_nprofiles(mp); p++) {
				const struct mask_profile *prof = mask_policy_profile(mp, p);
				const struct mask_strategy *s = mask_profile_strategy(prof, col->cols[r]);

				if (s->kind == MASK_NONE || mask_strategy_applies(s, &col->type))
					continue;
				snprintf(line, sizeof(line),
					 "rule %s: %s does not apply to column %s (%s%s); its values "
					 "become NULL",
					 mask_profile_name(prof), mask_strategy_format(s, st, sizeof(st)),
					 mask_colref_format(mask_policy_column(mp, col->cols[r]), name,
							    sizeof(name)),
					 mask_tclass_to_str(col->type.tc), col->type.array ? "[]" : "");
				if (add_warning(c, line))
					return -ENOMEM;
			}
		}
	}
	return 0;
}

static int cmp_clean(const void *a, const void *b)
{
	const struct mask_clean_rel *x = a, *y = b;
	int r = strcmp(x->rel, y->rel);

	return r ? r : strcmp(x->nsp, y->nsp);
}

static void free_clean(struct mask_catalog *c)
{
	for (unsigned i = 0; i < c->nclean && i < MASK_CATALOG_CLEAN_MAX; i++) {
		free(c->clean[i].nsp);
		free(c->clean[i].rel);
	}
	free(c->clean);
	free(c->clean_oids);
	c->clean = NULL;
	c->clean_oids = NULL;
	c->nclean = c->clean_cap = 0;
}

static int cmp_oid(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The clean set is known only when the result was whole: the 'h' row came, and the
 * relations fit under the cap. Otherwise nothing counts as clean (fail closed). */
static int seal_clean(struct mask_catalog_builder *b)
{
	struct mask_catalog *c = b->c;
	char line[160];

	if (c->nclean > MASK_CATALOG_CLEAN_MAX) {
		free_clean(c);
		snprintf(line, sizeof(line),
			 "more than %u tables without masked columns: computed columns of masked "
			 "identities are masked whenever a statement names a relation",
			 MASK_CATALOG_CLEAN_MAX);
		return add_warning(c, line);
	}
	if (!b->saw_hooks) {
		free_clean(c);
		c->code_hooks = true;
		return 0;
	}
	c->clean_oids = malloc((c->nclean ? c->nclean : 1) * sizeof(*c->clean_oids));
	if (!c->clean_oids)
		return -ENOMEM;
	for (unsigned i = 0; i < c->nclean; i++)
		c->clean_oids[i] = c->clean[i].oid;
	if (c->nclean) {
		qsort(c->clean, c->nclean, sizeof(*c->clean), cmp_clean);
		qsort(c->clean_oids, c->nclean, sizeof(*c->clean_oids), cmp_oid);
	}
	c->clean_known = true;
	return 0;
}

int mask_catalog_builder_finish(struct mask_catalog_builder *b, struct mask_catalog **out)
{
	int rc = seal_clean(b);

	if (!rc)
		rc = attach_attrs(b);

	if (!rc)
		rc = build_slots(b->c);
	if (!rc)
		rc = check_strategies(b->c, b->missing);
	if (!rc) {
		*out = b->c;
		b->c = NULL;
	}
	mask_catalog_builder_free(b);
	return rc;
}

int mask_catalog_empty(struct mask_policy *mp, struct mask_catalog **out)
{
	struct mask_catalog *c = catalog_new(mp);

	if (!c || build_slots(c)) {
		mask_catalog_put(c);
		return -ENOMEM;
	}
	c->code_hooks = false; /* nothing is masked: no code can reveal a masked value */
	*out = c;
	return 0;
}

void mask_catalog_get(struct mask_catalog *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void mask_catalog_put(struct mask_catalog *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (unsigned i = 0; i < c->ncolumns; i++) {
		free(c->columns[i].cols);
		free(c->columns[i].direct);
	}
	free(c->columns);
	free(c->slots);
	for (unsigned i = 0; i < c->nderived; i++)
		free(c->derived[i].cols);
	free(c->derived);
	for (unsigned i = 0; i < c->ntables; i++) {
		for (unsigned k = 0; k < c->tables[i].nattrs; k++)
			free(c->tables[i].attnames[k]);
		free(c->tables[i].attnames);
		free(c->tables[i].attnums);
		free(c->tables[i].generated);
		free(c->tables[i].nsp);
		free(c->tables[i].rel);
	}
	free(c->tables);
	free_clean(c);
	for (unsigned i = 0; i < c->nwarnings; i++)
		free(c->warnings[i]);
	free(c->warnings);
	mask_policy_put(c->policy);
	free(c);
}

/* ---- lookups ------------------------------------------------------------------------------ */

const struct mask_policy *mask_catalog_policy(const struct mask_catalog *c)
{
	return c->policy;
}

const struct mask_column *mask_catalog_lookup(const struct mask_catalog *c, uint32_t table_oid,
					      int16_t attnum)
{
	unsigned s;

	if (!c->nslots || table_oid == 0)
		return NULL;
	s = slot_hash(table_oid, attnum) & (c->nslots - 1);
	while (c->slots[s]) {
		const struct mask_column *col = &c->columns[c->slots[s] - 1];

		if (col->table_oid == table_oid && col->attnum == attnum)
			return col;
		s = (s + 1) & (c->nslots - 1);
	}
	return NULL;
}

const struct mask_strategy *mask_column_strategy(const struct mask_column *col,
						 const struct mask_profile *p)
{
	static const struct mask_strategy none = {MASK_NONE, 0};

	for (unsigned i = 0; i < col->ncols; i++) {
		const struct mask_strategy *s = mask_profile_strategy(p, col->cols[i]);

		if (s->kind != MASK_NONE)
			return s;
	}
	return &none;
}

bool mask_catalog_derived(const struct mask_catalog *c, uint32_t relid,
			  const struct mask_profile *p)
{
	for (unsigned i = 0; i < c->nderived; i++) {
		if (c->derived[i].relid != relid)
			continue;
		for (unsigned k = 0; k < c->derived[i].ncols; k++)
			if (mask_profile_strategy(p, c->derived[i].cols[k])->kind != MASK_NONE)
				return true;
	}
	return false;
}

static int copy_from_table(const struct mask_table *t, const char *const *cols, unsigned ncols,
			   struct mask_origin *out, unsigned cap)
{
	unsigned n = 0;

	if (ncols) {
		for (unsigned i = 0; i < ncols; i++) {
			unsigned k;

			for (k = 0; k < t->nattrs; k++)
				if (strcmp(t->attnames[k], cols[i]) == 0)
					break;
			if (k == t->nattrs)
				return -ENOENT;
			if (n == cap)
				return -E2BIG;
			out[n++] = (struct mask_origin){t->oid, t->attnums[k]};
		}
		return (int)n;
	}
	for (unsigned k = 0; k < t->nattrs; k++) {
		if (t->generated[k])
			continue;
		if (n == cap)
			return -E2BIG;
		out[n++] = (struct mask_origin){t->oid, t->attnums[k]};
	}
	return (int)n;
}

int mask_catalog_copy_columns(const struct mask_catalog *c, const char *schema,
			      const char *table, const char *const *cols, unsigned ncols,
			      struct mask_origin *out, unsigned cap)
{
	const struct mask_table *found = NULL;

	for (unsigned i = 0; i < c->ntables; i++) {
		const struct mask_table *t = &c->tables[i];

		if (strcmp(t->rel, table) != 0 || (schema && strcmp(t->nsp, schema) != 0))
			continue;
		if (found)
			return -EDOM; /* the search_path decides, and we cannot see it */
		found = t;
	}
	if (!found)
		return 0;
	return copy_from_table(found, cols, ncols, out, cap);
}

bool mask_catalog_relation_clean(const struct mask_catalog *c, const char *schema,
				 const char *rel)
{
	unsigned lo = 0, hi = c->clean_known ? c->nclean : 0;

	/* the first entry of that relname */
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (strcmp(c->clean[mid].rel, rel) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (unsigned i = lo; c->clean_known && i < c->nclean && !strcmp(c->clean[i].rel, rel);
	     i++) {
		if (!schema || !schema[0]) /* search_path picks: every one must be clean */
			return c->clean[i].everywhere;
		if (!strcmp(c->clean[i].nsp, schema))
			return true;
	}
	return false;
}

bool mask_catalog_relid_listed(const struct mask_catalog *c, uint32_t relid)
{
	for (unsigned i = 0; i < c->nderived; i++)
		if (c->derived[i].relid == relid)
			return true;
	for (unsigned i = 0; i < c->ncolumns; i++)
		if (c->columns[i].table_oid == relid)
			return true;
	return c->clean_known && c->nclean &&
	       bsearch(&relid, c->clean_oids, c->nclean, sizeof(relid), cmp_oid) != NULL;
}

bool mask_catalog_function_clean(const struct mask_catalog *c, const char *schema,
				 const char *name)
{
	int i;

	if (schema && schema[0] && strcmp(schema, "pg_catalog") != 0)
		return false;
	i = safe_index(name);
	return i >= 0 && !c->shadowed[i];
}

bool mask_catalog_code_hooks(const struct mask_catalog *c)
{
	return c->code_hooks;
}

uint64_t mask_catalog_generation(const struct mask_catalog *c)
{
	return c->generation;
}

uint64_t mask_catalog_next_generation(void)
{
	return atomic_load(&generations) + 1;
}

unsigned mask_catalog_nwarnings(const struct mask_catalog *c)
{
	return c->nwarnings;
}

const char *mask_catalog_warning(const struct mask_catalog *c, unsigned i)
{
	return i < c->nwarnings ? c->warnings[i] : NULL;
}

bool mask_ddl_invalidates(const char *tag)
{
	static const char *const prefixes[] = {"CREATE ", "ALTER ", "DROP ", "IMPORT FOREIGN SCHEMA"};

	if (!tag)
		return false;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(tag, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* ---- the published catalog ----------------------------------------------------------------- */

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mask_catalog *current;

void mask_catalog_publish(struct mask_catalog *c)
{
	struct mask_catalog *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = c;
	pthread_mutex_unlock(&current_lock);
	mask_catalog_put(old);
}

struct mask_catalog *mask_catalog_acquire(void)
{
	struct mask_catalog *c;

	pthread_mutex_lock(&current_lock);
	c = current;
	if (c)
		mask_catalog_get(c);
	pthread_mutex_unlock(&current_lock);
	return c;
}
