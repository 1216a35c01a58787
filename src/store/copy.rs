//! Copying a whole store into another: `migrate-store` (a SQLite file into an empty Postgres
//! database, or any store into an empty one), and the SQLite copy a Postgres dry run works on.
//!
//! Owns: the list of tables and their columns (checked against SQLite's schema by a test, so a
//! new column cannot be left behind), the order that keeps references valid, and the proof that
//! the copy is whole: row counts and money sums compared, table by table, inside the target's
//! transaction before it commits. Does not own: opening either side (`Store::open`).

use anyhow::Context as _;

use super::Store;
use super::db::{Db, Value, params};

/// Every table and its columns, parents before children. The first column is the primary key
/// (the copy pages through it).
const TABLES: &[(&str, &[&str])] = &[
    ("campaign", &["id", "tag", "started_at", "length_seconds", "slot_seconds"]),
    ("slots", &["slot", "claimed_at", "attempted_at", "issued_at", "in_flight_until", "failed_reason", "attempt"]),
    ("retired_slot_attempts", &["slot", "attempt"]),
    (
        "invoice_drafts",
        &["draft_key", "slot", "position", "name", "tax_id", "amount", "due", "expiration", "tags", "invoice_id"],
    ),
    (
        "events",
        &[
            "id",
            "subscription",
            "log_type",
            "log_id",
            "resource_id",
            "workspace_id",
            "created",
            "body",
            "signature",
            "source",
            "received_at",
            "applied_at",
            "delivered_at",
        ],
    ),
    ("invoices", &["id", "status", "amount", "nominal_amount", "fee", "ours", "last_log_at"]),
    (
        "credits",
        &[
            "invoice_id",
            "event_id",
            "amount",
            "fee",
            "net",
            "credited_at",
            "recorded_at",
            "state",
            "reason",
            "next_send_at",
            "origin",
            "confirmed_at",
            "budget_from",
            "limit_approved",
        ],
    ),
    ("sends", &["external_id", "invoice_id", "attempt", "amount", "claimed_at", "outcome", "error", "target", "tries"]),
    (
        "transfers",
        &["id", "external_id", "invoice_id", "amount", "status", "updated_at", "ours", "target", "reason", "returned"],
    ),
    ("settings", &["key", "value", "source", "set_at"]),
    ("controls", &["key", "reason", "set_at"]),
];

/// The money column summed to prove a table's copy (cents), where it has one.
fn money_column(table: &str) -> Option<&'static str> {
    match table {
        "invoice_drafts" | "invoices" | "sends" | "transfers" => Some("amount"),
        "credits" => Some("net"),
        _ => None,
    }
}

/// Rows read (and written) per statement.
const PAGE: usize = 500;
/// Rows per multi-row INSERT.
const INSERT_ROWS: usize = 100;

/// One table's figures, on both sides of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFigures {
    pub table: &'static str,
    pub rows: i64,
    /// The sum of its money column, in cents (0 where it has none).
    pub cents: i64,
}

fn figures(db: &Db) -> anyhow::Result<Vec<TableFigures>> {
    TABLES
        .iter()
        .map(|(table, _)| {
            let sum = money_column(table).map_or("0".to_string(), |c| format!("COALESCE(SUM({c}), 0)"));
            let (rows, cents) = db.query_row(&format!("SELECT COUNT(*), {sum} FROM {table}"), params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(TableFigures { table, rows, cents })
        })
        .collect()
}

/// Copies every row of `from` into `to` (which must be empty), in one transaction on each side,
/// and proves it: counts and sums equal table by table before `to` commits.
pub(super) fn copy_tables(from: &Db, to: &Db) -> anyhow::Result<Vec<TableFigures>> {
    let read = from.read_tx()?;
    let write = to.write_tx()?;
    let occupied: Vec<String> =
        figures(&write)?.into_iter().filter(|f| f.rows > 0).map(|f| format!("{} ({} rows)", f.table, f.rows)).collect();
    anyhow::ensure!(
        occupied.is_empty(),
        "the target store is not empty: {}; nothing was copied; to fix: name an empty database",
        occupied.join(", ")
    );
    for (table, columns) in TABLES {
        copy_table(&read, &write, table, columns).with_context(|| format!("copying the table {table}"))?;
    }
    let (source, target) = (figures(&read)?, figures(&write)?);
    for (s, t) in source.iter().zip(&target) {
        anyhow::ensure!(
            s == t,
            "the copy of {} does not add up (source {} rows, {} cents; copy {} rows, {} cents); nothing was committed",
            s.table,
            s.rows,
            s.cents,
            t.rows,
            t.cents
        );
    }
    write.commit()?;
    read.commit()?;
    Ok(source)
}

fn copy_table(from: &Db, to: &Db, table: &str, columns: &[&str]) -> anyhow::Result<()> {
    let list = columns.join(", ");
    let key = columns[0];
    let first = format!("SELECT {list} FROM {table} ORDER BY {key} LIMIT {PAGE}");
    let next = format!("SELECT {list} FROM {table} WHERE {key} > ?1 ORDER BY {key} LIMIT {PAGE}");
    let mut after: Option<Value> = None;
    loop {
        let rows: Vec<Vec<Value>> = match &after {
            None => from.query_map(&first, params![], |r| Ok(r.values().to_vec()))?,
            Some(k) => from.query_map(&next, params![k], |r| Ok(r.values().to_vec()))?,
        };
        for chunk in rows.chunks(INSERT_ROWS) {
            let width = columns.len();
            let tuples: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let marks: Vec<String> = (1..=width).map(|j| format!("?{}", i * width + j)).collect();
                    format!("({})", marks.join(", "))
                })
                .collect();
            let sql = format!("INSERT INTO {table} ({list}) VALUES {}", tuples.join(", "));
            let values: Vec<Value> = chunk.iter().flatten().cloned().collect();
            to.execute(&sql, &values)?;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE => after = Some(last[0].clone()),
            _ => return Ok(()),
        }
    }
}

/// `migrate-store`: copies the store at `from` into the empty store at `to` (created and
/// migrated first), and returns the figures both sides agree on.
pub fn migrate_store(from: &super::Location, to: &super::Location) -> anyhow::Result<Vec<TableFigures>> {
    anyhow::ensure!(
        from.exists(),
        "the source store {} does not exist; to fix: name the SQLite file the deployment uses (--from)",
        from.display()
    );
    let source = Store::open(from).with_context(|| format!("opening the source store {}", from.display()))?;
    let target = Store::open(to).with_context(|| format!("opening the target store {}", to.display()))?;
    copy_tables(&source.db, &target.db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Dialect;

    #[test]
    fn every_column_of_the_schema_is_copied() {
        // On the backend under test: SQLite's schema after its migrations, or Postgres's.
        let (_dir, store) = crate::store::testing::temp_store();
        let (tables_sql, columns_sql) = match store.db.dialect() {
            Dialect::Sqlite => (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                "SELECT name FROM pragma_table_info(?1)",
            ),
            Dialect::Postgres => (
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'
                   AND table_name NOT IN ('leases', 'stark_sweep_schema') ORDER BY table_name",
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public'
                   AND table_name = ?1 ORDER BY ordinal_position",
            ),
        };
        let tables: Vec<String> = store.db.query_map(tables_sql, params![], |r| r.get(0)).unwrap();
        let mut listed: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
        listed.sort_unstable();
        assert_eq!(tables, listed);
        for (table, columns) in TABLES {
            let have: Vec<String> = store.db.query_map(columns_sql, params![table], |r| r.get(0)).unwrap();
            assert_eq!(have, *columns, "{table}");
        }
    }

    #[test]
    fn a_copy_adds_up_and_an_occupied_target_is_refused() {
        let (_dir, mut store) = crate::store::testing::temp_store();
        crate::store::testing::add_settled_history(&mut store, "ws", 0, 1_203);
        let (_dir2, copy) = crate::store::testing::temp_store();
        let figures = copy_tables(&store.db, &copy.db).unwrap();
        let credits = figures.iter().find(|f| f.table == "credits").unwrap();
        assert_eq!((credits.rows, credits.cents), (1_203, 1_203_000));
        assert_eq!(figures, super::figures(&copy.db).unwrap());
        let again = copy_tables(&store.db, &copy.db).unwrap_err();
        assert!(format!("{again:#}").contains("not empty"), "{again:#}");
        assert_eq!(figures, super::figures(&copy.db).unwrap(), "a refused copy changes nothing");
    }
}
