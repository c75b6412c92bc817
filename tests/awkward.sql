-- A database with content that breaks naive dump/restore code.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünïcödé ☃');
CREATE SCHEMA "Schéma ""quoted""";
CREATE TABLE "Schéma ""quoted"""."Table With Spaces" (
    "ID" serial PRIMARY KEY,
    "naïve column" text,
    feeling mood,
    note text
);
COMMENT ON TABLE "Schéma ""quoted"""."Table With Spaces" IS 'comment with ''quotes'' and ünïcödé 🏥';
COMMENT ON COLUMN "Schéma ""quoted"""."Table With Spaces"."naïve column" IS 'column comment';
INSERT INTO "Schéma ""quoted"""."Table With Spaces" ("naïve column", feeling, note) VALUES
    ('tab	inside', 'happy', E'line1\nline2\r\nline3'),
    (E'back\\slash \\. dot', 'ünïcödé ☃', '\.'),
    (NULL, NULL, ''),
    ('日本語テキスト', 'sad', repeat('x', 100000));

CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
INSERT INTO blobs SELECT 1, string_agg(set_byte('\x00'::bytea, 0, b), ''::bytea ORDER BY b)
FROM generate_series(0, 255) b;
INSERT INTO blobs VALUES (2, '\x'), (3, NULL), (4, decode(repeat('00ff5c0a0d', 5000), 'hex'));

CREATE SEQUENCE custom_seq START 1000 INCREMENT 7;
SELECT nextval('custom_seq'), nextval('custom_seq'), nextval('custom_seq');

CREATE TABLE measurements (id bigint GENERATED ALWAYS AS IDENTITY, taken date NOT NULL, value numeric)
    PARTITION BY RANGE (taken);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measurements (taken, value)
SELECT date '2024-01-01' + g, g * 1.5 FROM generate_series(0, 600) g;

CREATE TABLE audit_log (id serial PRIMARY KEY, msg text);
CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_log (msg) VALUES ('inserted ' || NEW."ID");
  RETURN NEW;
END;
$$;
CREATE TRIGGER trg_log AFTER INSERT ON "Schéma ""quoted"""."Table With Spaces"
    FOR EACH ROW EXECUTE FUNCTION log_insert();
INSERT INTO "Schéma ""quoted"""."Table With Spaces" ("naïve column") VALUES ('after trigger');

CREATE TABLE patient_notes (id int PRIMARY KEY, owner text, body text);
ALTER TABLE patient_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON patient_notes USING (owner = current_user);
INSERT INTO patient_notes VALUES (1, 'postgres', 'secret'), (2, 'other', 'hidden');

CREATE TABLE empty_table (a int);
CREATE VIEW v_happy AS SELECT "ID", note FROM "Schéma ""quoted"""."Table With Spaces" WHERE feeling = 'happy';
CREATE MATERIALIZED VIEW mv_counts AS SELECT feeling, count(*) FROM "Schéma ""quoted"""."Table With Spaces" GROUP BY 1;

SELECT lo_from_bytea(0, decode(repeat('deadbeef', 20000), 'hex'));
SELECT lo_from_bytea(0, '\x');
SELECT lo_from_bytea(0, convert_to('large object with ünïcödé', 'UTF8'));
