-- Hand-written cases for the differential lexer test (test_sql_differential.py): every
-- statement here is valid for PostgreSQL 15, so each one is a conclusive check that
-- pgwarden's statement boundaries are the server's. Read statement by statement, as psql
-- sends them; the SET standard_conforming_strings lines switch how the rest is lexed.
SELECT 1 /* a ; inside a comment */;
SELECT 2 /* nested /* comments ; */ still ; inside */ + 1;
SELECT 3 /* /* /* deep */ ; */ ; */;
SELECT 4 -- a line comment ; with a semicolon
;
SELECT 'a;b', 'it''s;', ';''';
SELECT E'\\;', 'x';
SELECT E'\';', 'y';
SELECT e'\\\\', E'\x41;';
SELECT 'continued'
  ';string', 'z';
SELECT 'continued' -- comment between the parts ; here
';string';
SELECT $$a;b$$, $$;$$;
SELECT $tag$ $$ ; $ta$ ; $tag$;
SELECT $a$x$A$;$a$;
SELECT $_1$;$_1$;
SELECT $q$it's $$ nested $$ ; 'quotes'$q$;
SELECT 1 AS "a;b", 2 AS "it""s;", 3 AS ";";
SELECT U&'\0041;\0042', U&'!0041;' UESCAPE '!';
SELECT U&'d\0061t\+000061;' AS "U&";
SELECT 1 AS U&"a;\0062", 2 AS U&"c!0064;" UESCAPE '!';
SELECT 'a' || $x$;$x$ || E'\'' || ';';
SELECT B'0101', X'1F;'::text;
SELECT N'nat;ional';
SELECT 1; SELECT 2;
;;;SELECT 3;;;
SELECT (array[1,2])[1], 'x'::text, 3::int4;
SELECT 1 /* a comment with a quote ' inside */;
SELECT '/* not a comment ;' , '-- nor this ;';
SELECT "a$b" FROM (SELECT 1 AS "a$b") t;
SELECT x$1 FROM (SELECT 1 AS x$1) t;
SELECT 1e10, 1.5e-3, .5, 1., 1.e5, 2E+3;
SELECT 1 <> 2, 3 != 4, 5 >= 6, 1 ||/ 27;
DO $$ BEGIN PERFORM 1; PERFORM ';'; END $$;
DO $body$ BEGIN RAISE NOTICE '%', $$;$$; END $body$;
CREATE TEMP TABLE lexer_t (a text);
SELECT 'tab	;	separated';
SET standard_conforming_strings = off;
SELECT 'a\'; b';
SELECT 'c\\';
SELECT 'd\\\'; e';
SELECT E'f\'; g', 'h';
SELECT 'i''; j\'';
SELECT $$k\'; l$$;
RESET standard_conforming_strings;
SELECT 'm\';
SELECT 'n\' || ';' AS "o";
SET standard_conforming_strings TO 'off';
SELECT 'p\''' ; q';
SET standard_conforming_strings TO on;
SELECT 'done';
