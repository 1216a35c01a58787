-- stark-sweep schema, version 4: defence in depth for real money.
-- Runs with foreign keys off (SQLite's procedure for rebuilding a table), checked before commit.

-- Credits gain the state `held`: it would cross an outflow limit (per transfer, or per rolling
-- 24 hours), so it waits, with the reason; a raised limit or freed room releases it on the next
-- run, and --retry-attention approves it once (`limit_approved`).
CREATE TABLE credits_v4 (
    invoice_id    TEXT    PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    amount        INTEGER NOT NULL,
    fee           INTEGER NOT NULL,
    net           INTEGER NOT NULL,
    credited_at   TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('unclaimed', 'open', 'held', 'transferred', 'skipped', 'attention')),
    reason        TEXT,
    next_send_at  TEXT,
    origin        TEXT    CHECK (origin IN ('issued', 'workspace', 'legacy')),
    confirmed_at  TEXT,
    budget_from   INTEGER NOT NULL DEFAULT 0,
    limit_approved INTEGER NOT NULL DEFAULT 0 CHECK (limit_approved IN (0, 1))
);
INSERT INTO credits_v4 (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, next_send_at,
                        origin, confirmed_at, budget_from)
SELECT invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, next_send_at, origin,
       confirmed_at, budget_from
FROM credits;
DROP TABLE credits;
ALTER TABLE credits_v4 RENAME TO credits;

-- Operator switches that every host reads from the store: `kill_switch` (while present, no
-- money leaves: nothing is claimed or sent; intake goes on).
CREATE TABLE controls (
    key           TEXT    PRIMARY KEY,
    reason        TEXT    NOT NULL,
    set_at        TEXT    NOT NULL
);

-- The rolling 24-hour outflow is summed over recent sends.
CREATE INDEX sends_claimed_at ON sends (claimed_at);
