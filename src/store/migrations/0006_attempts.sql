-- stark-sweep schema, version 6: each attempt to create a slot's invoices is numbered, so two
-- runs that both found the slot unattempted (one of them on a lease that expired under it)
-- cannot both send its drafts: starting an attempt is a compare-and-set on this number.
ALTER TABLE slots ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
-- A slot whose claim was abandoned (its first request refused outright) leaves its last attempt
-- number here, and a new claim of the slot counts on from it: attempt numbers are never reused,
-- so a run that read a number before the abandon cannot start an attempt on the new claim.
CREATE TABLE retired_slot_attempts (
    slot    INTEGER PRIMARY KEY,
    attempt INTEGER NOT NULL
);
