-- stark-sweep schema, version 3: every stuck state has a way out, and the bank's reason is kept.
-- Runs with foreign keys off (SQLite's procedure for rebuilding a table), checked before commit.

-- Sends gain the outcome `refused`: Stark Bank refused the request for a reason that passes
-- (rate limit, authentication or clock, insufficient balance), so nothing was created and the
-- same externalId is sent again after a backoff. `tries` counts the requests made with this
-- externalId, so a loop of unknown outcomes ends.
CREATE TABLE sends_v3 (
    external_id   TEXT    PRIMARY KEY,
    invoice_id    TEXT    NOT NULL REFERENCES credits (invoice_id),
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    claimed_at    TEXT    NOT NULL,
    outcome       TEXT    CHECK (outcome IN ('accepted', 'unknown', 'rejected', 'refused')),
    error         TEXT,                      -- the bank's reason (sanitized), or what went wrong
    target        TEXT,
    tries         INTEGER NOT NULL DEFAULT 1 CHECK (tries >= 1),
    UNIQUE (invoice_id, attempt)
);
INSERT INTO sends_v3 (external_id, invoice_id, attempt, amount, claimed_at, outcome, error, target)
SELECT external_id, invoice_id, attempt, amount, claimed_at, outcome, error, target FROM sends;
DROP TABLE sends;
ALTER TABLE sends_v3 RENAME TO sends;

-- Credits: attempts before `budget_from` do not count against the attempt budget (what
-- --retry-attention and failures that pass, such as an insufficient balance, reset).
ALTER TABLE credits ADD COLUMN budget_from INTEGER NOT NULL DEFAULT 0;

-- Transfers: the bank's reason for a failure (the failed log's errors), and whether it failed
-- after it had succeeded (a return).
ALTER TABLE transfers ADD COLUMN reason TEXT;
ALTER TABLE transfers ADD COLUMN returned INTEGER NOT NULL DEFAULT 0 CHECK (returned IN (0, 1));

-- Slots: until when a create request may still be processed by Stark Bank (real time; cleared
-- once it was answered), and why a slot stopped being retried on its own (a permanent refusal).
ALTER TABLE slots ADD COLUMN in_flight_until TEXT;
ALTER TABLE slots ADD COLUMN failed_reason TEXT;
