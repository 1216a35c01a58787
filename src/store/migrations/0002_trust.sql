-- stark-sweep schema, version 2: the trust boundary. A valid signature proves an event is
-- Stark Bank's, for some workspace; only our own workspace's events, about invoices this
-- deployment issued and transfers it sent, move or settle money.
-- Runs with foreign keys off (SQLite's procedure for rebuilding a table), checked before commit.

-- What this deployment learned about itself, and how it was proven (the workspace id).
CREATE TABLE settings (
    key           TEXT    PRIMARY KEY,
    value         TEXT    NOT NULL,
    source        TEXT    NOT NULL,          -- how it was proven, e.g. "GET /v2/event"
    set_at        TEXT    NOT NULL
);

-- Credits gain the state `unclaimed` (a credited invoice of our workspace that this deployment
-- did not issue: never swept, unless --all-credits confirms it by fetching the invoice with our
-- own credentials) and `origin`, why a credit is ours.
CREATE TABLE credits_v2 (
    invoice_id    TEXT    PRIMARY KEY,
    event_id      TEXT    NOT NULL,          -- the event (or `log:<id>`, a log fetched from the API) that recorded it
    amount        INTEGER NOT NULL,
    fee           INTEGER NOT NULL,
    net           INTEGER NOT NULL,          -- amount - fee, what must be transferred
    credited_at   TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('unclaimed', 'open', 'transferred', 'skipped', 'attention')),
    reason        TEXT,
    next_send_at  TEXT,                      -- backoff before re-sending a failed transfer
    origin        TEXT    CHECK (origin IN ('issued', 'workspace', 'legacy')),
    confirmed_at  TEXT                       -- when --all-credits fetched the invoice to confirm it
);
-- Credits recorded before this version: ours when this deployment issued the invoice. Others
-- that already moved money (or were skipped) stay as history; open ones become unclaimed.
INSERT INTO credits_v2 (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason,
                        next_send_at, origin)
SELECT c.invoice_id, c.event_id, c.amount, c.fee, c.net, c.credited_at, c.recorded_at,
       CASE WHEN d.invoice_id IS NULL AND c.state IN ('open', 'attention') THEN 'unclaimed' ELSE c.state END,
       CASE WHEN d.invoice_id IS NULL AND c.state IN ('open', 'attention')
            THEN 'recorded before ownership was checked: not an invoice this deployment issued'
            ELSE c.reason END,
       c.next_send_at,
       CASE WHEN d.invoice_id IS NOT NULL THEN 'issued'
            WHEN c.state IN ('open', 'attention') THEN NULL
            ELSE 'legacy' END
FROM credits c LEFT JOIN invoice_drafts d ON d.invoice_id = c.invoice_id;
DROP TABLE credits;
ALTER TABLE credits_v2 RENAME TO credits;

-- Where each send went (`bank/branch/account/taxid`, digits only): a transfer is ours only if
-- its externalId, amount and target are those of one of our sends.
ALTER TABLE sends ADD COLUMN target TEXT;

-- Transfers: whether it is ours (see above), and its target, to tell strays apart.
ALTER TABLE transfers ADD COLUMN ours INTEGER NOT NULL DEFAULT 0 CHECK (ours IN (0, 1));
ALTER TABLE transfers ADD COLUMN target TEXT;
UPDATE transfers SET ours = 1
WHERE EXISTS (SELECT 1 FROM sends s WHERE s.external_id = transfers.external_id AND s.amount = transfers.amount);
