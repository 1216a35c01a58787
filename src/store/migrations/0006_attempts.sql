-- stark-sweep schema, version 6: each attempt to create a slot's invoices is numbered, so two
-- runs that both found the slot unattempted (one of them on a lease that expired under it)
-- cannot both send its drafts: starting an attempt is a compare-and-set on this number.
ALTER TABLE slots ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
