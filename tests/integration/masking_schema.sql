-- The masking fixture: customers with SSN, card number, e-mail and the rest, in the shapes
-- masking must handle (a domain over varchar, char(n), citext, numeric, date, arrays,
-- inheritance, partitions, a view and a materialized view over masked columns).
-- Used by tests/integration/test_masking.py and tests/integration/capture_mask.py.
CREATE EXTENSION IF NOT EXISTS citext;
CREATE DOMAIN ssn_t AS varchar(11);
CREATE TABLE customers (
    id int PRIMARY KEY,
    name text,
    ssn ssn_t UNIQUE,
    card char(16),
    email citext,
    phone text,
    dob date,
    balance numeric(10,2),
    tags text[],
    created timestamptz
);
CREATE TABLE customers_archive () INHERITS (customers);
CREATE TABLE payments (id int, customer_id int, card char(16)) PARTITION BY RANGE (id);
CREATE TABLE payments_1 PARTITION OF payments FOR VALUES FROM (0) TO (1000000);
CREATE VIEW customer_contacts AS SELECT id, name, email FROM customers;
CREATE VIEW customer_ssn_view AS SELECT id, ssn FROM customers;
CREATE MATERIALIZED VIEW customer_ssns AS SELECT id, ssn FROM customers;
INSERT INTO customers VALUES
 (1, 'Alice', '123-45-6789', '4111111111111111', 'alice@example.com', '+1 (555) 123-4567',
  '1985-07-23', 1234.56, '{vip,"new customer"}', '2024-03-05 12:34:56+00'),
 (2, 'Bob', '987-65-4321', '5500000000000004', 'Bob@Example.org', '555 0100',
  '1990-01-31', 0.10, '{}', '2023-12-31 23:59:59+00'),
 (3, 'Zoë', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'Dan "The Man"', '111-22-3333', '340000000000009', 'dan+tag@mail.example',
  '(020) 7946 0018', '2000-02-29', -5.00, E'{"a,b",NULL,"q\\"x"}', '1999-12-31 23:00:00+00');
INSERT INTO customers_archive VALUES
 (10, 'Old', '555-12-3456', '6011000000000004', 'old@example.net', '555 0199', '1950-06-01',
  1.00, '{gone}', '2001-01-01 00:00:00+00');
INSERT INTO payments VALUES (1, 1, '4111111111111111'), (2, 2, '5500000000000004');
REFRESH MATERIALIZED VIEW customer_ssns;
-- a table with no masked column, for the computed columns that may pass clear
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric(10,2));
INSERT INTO orders VALUES (1, 1, 10.00), (2, 1, 20.00), (3, 2, 5.50);
-- planner statistics: pg_stats shows sampled values of every column, masked ones included
ANALYZE customers;
