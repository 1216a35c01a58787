-- The Postgres store: the same tables as SQLite's schema 5 (src/store/migrations/), in
-- Postgres's types. Integers are BIGINT (the store binds every integer as i64), flags stay
-- 0/1 integers so the SQL is the same on both backends, timestamps stay text in the format
-- Stark Bank uses (they compare as text, as in SQLite). Applied once, under the migration lock.

CREATE TABLE campaign (
    id             BIGINT  PRIMARY KEY CHECK (id = 1),
    tag            TEXT    NOT NULL,
    started_at     TEXT    NOT NULL,
    length_seconds BIGINT  NOT NULL CHECK (length_seconds > 0),
    slot_seconds   BIGINT  NOT NULL CHECK (slot_seconds > 0)
);

CREATE TABLE slots (
    slot            BIGINT PRIMARY KEY CHECK (slot >= 0),
    claimed_at      TEXT   NOT NULL,
    attempted_at    TEXT,
    issued_at       TEXT,
    in_flight_until TEXT,
    failed_reason   TEXT
);

CREATE TABLE invoice_drafts (
    draft_key   TEXT   PRIMARY KEY,
    slot        BIGINT NOT NULL REFERENCES slots (slot) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    name        TEXT   NOT NULL,
    tax_id      TEXT   NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    due         TEXT   NOT NULL,
    expiration  BIGINT NOT NULL,
    tags        TEXT   NOT NULL,
    invoice_id  TEXT   UNIQUE,
    UNIQUE (slot, position)
);

CREATE TABLE events (
    id            TEXT  PRIMARY KEY,
    subscription  TEXT  NOT NULL,
    log_type      TEXT  NOT NULL,
    log_id        TEXT  NOT NULL,
    resource_id   TEXT  NOT NULL,
    workspace_id  TEXT,
    created       TEXT  NOT NULL,
    body          BYTEA NOT NULL,
    signature     TEXT,
    source        TEXT  NOT NULL CHECK (source IN ('webhook', 'api')),
    received_at   TEXT  NOT NULL,
    applied_at    TEXT,
    delivered_at  TEXT
);
CREATE INDEX events_unapplied ON events (created) WHERE applied_at IS NULL;

CREATE TABLE invoices (
    id              TEXT   PRIMARY KEY,
    status          TEXT   NOT NULL,
    amount          BIGINT NOT NULL,
    nominal_amount  BIGINT NOT NULL,
    fee             BIGINT NOT NULL,
    ours            BIGINT NOT NULL CHECK (ours IN (0, 1)),
    last_log_at     TEXT   NOT NULL
);

CREATE TABLE credits (
    invoice_id     TEXT   PRIMARY KEY,
    event_id       TEXT   NOT NULL,
    amount         BIGINT NOT NULL,
    fee            BIGINT NOT NULL,
    net            BIGINT NOT NULL,
    credited_at    TEXT   NOT NULL,
    recorded_at    TEXT   NOT NULL,
    state          TEXT   NOT NULL CHECK (state IN ('unclaimed', 'open', 'held', 'transferred', 'skipped', 'attention')),
    reason         TEXT,
    next_send_at   TEXT,
    origin         TEXT   CHECK (origin IN ('issued', 'workspace', 'legacy')),
    confirmed_at   TEXT,
    budget_from    BIGINT NOT NULL DEFAULT 0,
    limit_approved BIGINT NOT NULL DEFAULT 0 CHECK (limit_approved IN (0, 1))
);
CREATE INDEX credits_state ON credits (state, credited_at, invoice_id);
CREATE INDEX credits_by_invoice ON credits (invoice_id, state, net);

CREATE TABLE sends (
    external_id  TEXT   PRIMARY KEY,
    invoice_id   TEXT   NOT NULL REFERENCES credits (invoice_id),
    attempt      BIGINT NOT NULL CHECK (attempt >= 1),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    claimed_at   TEXT   NOT NULL,
    outcome      TEXT   CHECK (outcome IN ('accepted', 'unknown', 'rejected', 'refused')),
    error        TEXT,
    target       TEXT,
    tries        BIGINT NOT NULL DEFAULT 1 CHECK (tries >= 1),
    UNIQUE (invoice_id, attempt)
);
CREATE INDEX sends_claimed_at ON sends (claimed_at);

CREATE TABLE transfers (
    id           TEXT   PRIMARY KEY,
    external_id  TEXT   NOT NULL,
    invoice_id   TEXT   NOT NULL,
    amount       BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    updated_at   TEXT   NOT NULL,
    ours         BIGINT NOT NULL DEFAULT 0 CHECK (ours IN (0, 1)),
    target       TEXT,
    reason       TEXT,
    returned     BIGINT NOT NULL DEFAULT 0 CHECK (returned IN (0, 1))
);
CREATE INDEX transfers_external ON transfers (external_id);
CREATE INDEX transfers_alive ON transfers (id) WHERE status IN ('created', 'processing');
CREATE INDEX transfers_not_ours ON transfers (invoice_id, id) WHERE ours = 0;
CREATE INDEX transfers_by_invoice ON transfers (invoice_id, ours, status, amount);

CREATE TABLE settings (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    source  TEXT NOT NULL,
    set_at  TEXT NOT NULL
);

CREATE TABLE controls (
    key     TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    set_at  TEXT NOT NULL
);

-- Job singletons across hosts (what the lock files next to a SQLite file do on one machine): a
-- run holds its row while it renews it; a dead run's row expires and the next run takes it.
CREATE TABLE leases (
    name        TEXT        PRIMARY KEY,
    holder      TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
