-- stark-sweep Postgres schema, version 2.
-- Each attempt to create a slot's invoices is numbered (as SQLite's schema 6): starting an
-- attempt is a compare-and-set on this number.
ALTER TABLE slots ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
-- An abandoned claim's last attempt number; a new claim counts on from it (as SQLite's).
CREATE TABLE retired_slot_attempts (
    slot    BIGINT PRIMARY KEY,
    attempt BIGINT NOT NULL
);

-- Text compares byte by byte, as in SQLite, whatever the database's default collation: the
-- timestamps are RFC 3339 text compared with < and >, and ids page in byte order.
DO $$
DECLARE c record;
BEGIN
    FOR c IN
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND data_type = 'text'
          AND table_name IN ('campaign', 'slots', 'invoice_drafts', 'events', 'invoices', 'credits',
                             'sends', 'transfers', 'settings', 'controls', 'leases')
          AND collation_name IS DISTINCT FROM 'C'
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE TEXT COLLATE "C"', c.table_name, c.column_name);
    END LOOP;
END $$;
