-- stark-sweep schema, version 1. Never edit an applied migration: add the next file instead.
-- Money is INTEGER cents. Times are RFC 3339 UTC text. Unique constraints carry the
-- idempotency rules: one campaign, one row per slot, one event per id, one credit per
-- invoice, one send per (invoice, attempt), one externalId per send.

CREATE TABLE campaign (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    tag           TEXT    NOT NULL,          -- e.g. c20261129t1830, carried by every invoice
    started_at    TEXT    NOT NULL,
    length_seconds INTEGER NOT NULL CHECK (length_seconds > 0),
    slot_seconds  INTEGER NOT NULL CHECK (slot_seconds > 0)
);

CREATE TABLE slots (
    slot          INTEGER PRIMARY KEY CHECK (slot >= 0),
    claimed_at    TEXT    NOT NULL,
    attempted_at  TEXT,                      -- set before each create request is sent
    issued_at     TEXT                       -- NULL until every draft has its invoice id
);

CREATE TABLE invoice_drafts (
    draft_key     TEXT    PRIMARY KEY,       -- also a tag on the invoice, to find it again
    slot          INTEGER NOT NULL REFERENCES slots (slot) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    tax_id        TEXT    NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    due           TEXT    NOT NULL,
    expiration    INTEGER NOT NULL,
    tags          TEXT    NOT NULL,          -- JSON array, exactly as sent
    invoice_id    TEXT    UNIQUE,
    UNIQUE (slot, position)
);

CREATE TABLE events (
    id            TEXT    PRIMARY KEY,
    subscription  TEXT    NOT NULL,
    log_type      TEXT    NOT NULL,
    log_id        TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    workspace_id  TEXT,
    created       TEXT    NOT NULL,
    body          BLOB    NOT NULL,          -- the exact text Stark Bank signed (or the API returned)
    signature     TEXT,                      -- NULL for events pulled from the API
    source        TEXT    NOT NULL CHECK (source IN ('webhook', 'api')),
    received_at   TEXT    NOT NULL,
    applied_at    TEXT,                      -- when process-events recorded its effects
    delivered_at  TEXT                       -- when we PATCHed isDelivered (API-pulled events)
);
CREATE INDEX events_unapplied ON events (created) WHERE applied_at IS NULL;

CREATE TABLE invoices (
    id              TEXT    PRIMARY KEY,
    status          TEXT    NOT NULL,
    amount          INTEGER NOT NULL,
    nominal_amount  INTEGER NOT NULL,
    fee             INTEGER NOT NULL,
    ours            INTEGER NOT NULL CHECK (ours IN (0, 1)),
    last_log_at     TEXT    NOT NULL         -- the newest log applied, so late logs cannot regress status
);

CREATE TABLE credits (
    invoice_id    TEXT    PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    amount        INTEGER NOT NULL,
    fee           INTEGER NOT NULL,
    net           INTEGER NOT NULL,          -- amount - fee, what must be transferred
    credited_at   TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('open', 'transferred', 'skipped', 'attention')),
    reason        TEXT,
    next_send_at  TEXT                       -- backoff before re-sending a failed transfer
);

-- Our sends: claimed here before any API call, so a crash always leaves a trace.
CREATE TABLE sends (
    external_id   TEXT    PRIMARY KEY,
    invoice_id    TEXT    NOT NULL REFERENCES credits (invoice_id),
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    claimed_at    TEXT    NOT NULL,
    outcome       TEXT    CHECK (outcome IN ('accepted', 'unknown', 'rejected')),
    error         TEXT,
    UNIQUE (invoice_id, attempt)
);

-- What Stark Bank says exists: from create answers, tag lookups, transfer events, refreshes.
CREATE TABLE transfers (
    id            TEXT    PRIMARY KEY,
    external_id   TEXT    NOT NULL,
    invoice_id    TEXT    NOT NULL,
    amount        INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE INDEX transfers_invoice ON transfers (invoice_id);
CREATE INDEX transfers_external ON transfers (external_id);
