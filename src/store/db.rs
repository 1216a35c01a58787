//! The connection under the store: one small interface (`execute`, `query_map`, `query_row`,
//! transactions) over SQLite (rusqlite) and Postgres (the synchronous `postgres` crate), so the
//! store's queries are written once.
//!
//! Owns: values and rows as the store sees them (`Value`, `Row`), statement text written once in
//! SQLite's spelling (`?N` parameters) and rewritten for Postgres (`$N`, no planner hints), and
//! what a writing transaction means on each backend. Does not own: what the queries are (the
//! store's modules), opening or migrating (`store::sqlite`, `store::postgres`).
//!
//! A writing transaction holds the one write lock of the store from its first statement:
//! SQLite's `BEGIN IMMEDIATE`, or on Postgres a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`, released by commit, rollback or a dropped connection, and usable
//! through PgBouncer's transaction pooling, unlike a session lock). So every read-then-write in
//! the store is as serial on Postgres, across hosts, as it is in one SQLite file. The
//! exactly-once rules never rest on that lock alone: unique keys (slot, externalId, event id)
//! refuse a second claim whatever the lock did.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use anyhow::Context as _;

/// The advisory lock key every writing transaction takes on Postgres ("STRK").
const WRITE_LOCK_KEY: i64 = 0x5354_524B;

/// How long a writing transaction waits for the write lock on Postgres before failing (a
/// temporary failure: exit 75, or 503 for the listener), as SQLite's busy timeout does.
pub(crate) const LOCK_TIMEOUT_MS: u64 = 10_000;

/// A Postgres session idle this long inside a transaction is ended by the server (its write
/// lock freed), so a stalled or partitioned host cannot hold every writer up.
const IDLE_IN_TX_TIMEOUT_MS: u64 = 30_000;

/// A value in or out of a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! to_integer {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
to_integer!(i64, i32, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// `params![a, b, ...]`: the statement's parameters, `?1`, `?2`, ... in order.
macro_rules! params {
    () => { &[] as &[$crate::store::db::Value] };
    ($($p:expr),+ $(,)?) => { &[$($crate::store::db::ToValue::to_value(&$p)),+] as &[$crate::store::db::Value] };
}
pub(crate) use params;

pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> anyhow::Result<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::Integer(i) => Ok(*i),
            other => anyhow::bail!("expected an integer in the database, found {other:?}"),
        }
    }
}
macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> anyhow::Result<Self> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).with_context(|| format!("the integer {i} in the database is out of range"))
            }
        }
    )*};
}
from_integer!(i32, u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            other => anyhow::bail!("expected a number in the database, found {other:?}"),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            Value::Blob(b) => String::from_utf8(b.clone()).context("text in the database is not UTF-8"),
            other => anyhow::bail!("expected text in the database, found {other:?}"),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            other => anyhow::bail!("expected bytes in the database, found {other:?}"),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row {
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> anyhow::Result<T> {
        let v = self.values.get(i).with_context(|| format!("the query has no column {i}"))?;
        T::from_value(v).with_context(|| format!("reading column {i}"))
    }

    pub(crate) fn values(&self) -> &[Value] {
        &self.values
    }
}

/// `query_row` found no row.
#[derive(Debug, thiserror::Error)]
#[error("the query returned no row")]
pub(crate) struct NoRows;

pub(crate) trait OptionalExtension<T> {
    /// `Ok(None)` instead of the `NoRows` error.
    fn optional(self) -> anyhow::Result<Option<T>>;
}

impl<T> OptionalExtension<T> for anyhow::Result<T> {
    fn optional(self) -> anyhow::Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.downcast_ref::<NoRows>().is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A Postgres connection with its prepared statements, keyed by the SQLite spelling.
///
/// Between transactions, a connection found closed (the server restarted, a network cut) is
/// opened again, also when a statement is the first to find it closed: that statement is run
/// once more on the new connection, since nothing of it took effect (statements outside a
/// transaction are reads, and `BEGIN`). Inside a transaction, a failed statement fails the
/// transaction: `commit` then reports it, instead of Postgres' silent rollback.
pub(crate) struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
    target: super::location::PgTarget,
    /// A statement of the open transaction failed.
    failed: bool,
}

impl PgConn {
    /// Runs `f` on the connection, as the type's comment says; errors name the database.
    fn run<R>(&mut self, in_tx: bool, mut f: impl FnMut(&mut Self) -> Result<R, postgres::Error>) -> anyhow::Result<R> {
        let mut again = !in_tx;
        loop {
            if self.client.is_closed() && !in_tx {
                self.client = super::postgres::connect(&self.target)?;
                self.statements.clear();
            }
            match f(self) {
                Ok(r) => return Ok(r),
                Err(e) if again && self.client.is_closed() => {
                    log::info!("the database connection was closed ({e}); reconnecting to {:?}", self.target);
                    again = false;
                }
                Err(e) => {
                    self.failed |= in_tx;
                    return Err(anyhow::Error::new(e).context(format!("the database {:?}", self.target)));
                }
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&postgres_sql(sql))?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

pub(crate) enum Db {
    /// `failed`: a statement of the open transaction failed (see `PgConn`).
    Sqlite {
        conn: rusqlite::Connection,
        failed: Cell<bool>,
    },
    Postgres {
        conn: Box<RefCell<PgConn>>,
        in_tx: Cell<bool>,
    },
}

impl Db {
    pub(crate) fn on_sqlite(conn: rusqlite::Connection) -> Self {
        Db::Sqlite { conn, failed: Cell::new(false) }
    }

    pub(crate) fn postgres(client: postgres::Client, target: super::location::PgTarget) -> Self {
        let conn = PgConn { client, statements: HashMap::new(), target, failed: false };
        Db::Postgres { conn: Box::new(RefCell::new(conn)), in_tx: Cell::new(false) }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Postgres { .. } => Dialect::Postgres,
        }
    }

    pub(crate) fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite { conn: c, .. } => Some(c),
            Db::Postgres { .. } => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn sqlite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match self {
            Db::Sqlite { conn: c, .. } => Some(c),
            Db::Postgres { .. } => None,
        }
    }

    /// The database's clock: the server's on Postgres (one clock for every host), this
    /// machine's for a SQLite file (only this machine opens it).
    pub(crate) fn clock(&self) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        match self {
            Db::Sqlite { .. } => Ok(chrono::Utc::now()),
            Db::Postgres { .. } => {
                let micros: i64 = self.query_row(
                    "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
                    params![],
                    |r| r.get(0),
                )?;
                chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| anyhow::anyhow!("the database's clock says {micros} µs since 1970"))
            }
        }
    }

    /// Runs one statement; returns how many rows it changed. Outside a transaction, a writing
    /// statement on Postgres takes the write lock for itself (as SQLite's autocommit does).
    pub(crate) fn execute(&self, sql: &str, params: &[Value]) -> anyhow::Result<usize> {
        match self {
            Db::Sqlite { conn: c, failed } => sqlite_run(c, failed, || {
                let mut stmt = c.prepare_cached(sql)?;
                stmt.execute(rusqlite::params_from_iter(params.iter()))
            }),
            Db::Postgres { conn, in_tx } => {
                if !in_tx.get() {
                    let tx = self.write_tx()?;
                    let n = tx.execute(sql, params)?;
                    tx.commit()?;
                    return Ok(n);
                }
                conn.borrow_mut()
                    .run(true, |pg| {
                        let stmt = pg.statement(sql)?;
                        pg.client.execute(&stmt, &pg_params(params))
                    })
                    .map(|n| n as usize)
            }
        }
    }

    /// Runs statements separated by `;` (fixtures and schema), without parameters.
    #[cfg(test)]
    pub(crate) fn execute_batch(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Db::Sqlite { conn: c, .. } => Ok(c.execute_batch(sql)?),
            Db::Postgres { conn, in_tx } => {
                conn.borrow_mut().run(in_tx.get(), |pg| pg.client.batch_execute(&postgres_sql(sql)))
            }
        }
    }

    /// Every row, each turned into a `T` by `f`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        mut f: impl FnMut(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        match self {
            Db::Sqlite { conn: c, failed } => {
                let rows = sqlite_run(c, failed, || {
                    let mut stmt = c.prepare_cached(sql)?;
                    let width = stmt.column_count();
                    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                    let mut out = Vec::new();
                    while let Some(r) = rows.next()? {
                        out.push((0..width).map(|i| r.get_ref(i).map(from_sqlite)).collect::<Result<_, _>>()?);
                    }
                    Ok(out)
                })?;
                rows.into_iter().map(|values| f(&Row { values })).collect()
            }
            Db::Postgres { conn, in_tx } => {
                let rows = conn.borrow_mut().run(in_tx.get(), |pg| {
                    let stmt = pg.statement(sql)?;
                    pg.client.query(&stmt, &pg_params(params))
                })?;
                rows.iter().map(|r| f(&Row { values: from_postgres(r)? })).collect()
            }
        }
    }

    /// The first row, turned into a `T` by `f`; the `NoRows` error when there is none (see
    /// `OptionalExtension::optional`).
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut f = Some(f);
        let mut first = None;
        // Only the first row is mapped; the statements that use this return one row.
        let rows = self.query_map(sql, params, |r| {
            if let Some(f) = f.take() {
                first = Some(f(r)?);
            }
            Ok(())
        })?;
        drop(rows);
        first.ok_or_else(|| NoRows.into())
    }

    /// A transaction that holds the store's write lock from its first statement.
    pub(crate) fn write_tx(&self) -> anyhow::Result<Tx<'_>> {
        self.begin(
            "BEGIN IMMEDIATE",
            // READ COMMITTED whatever the database's default: each statement after the lock sees
            // what the previous holder committed (under REPEATABLE READ the snapshot would be
            // taken before the lock is granted, and the kill switch and limits read stale).
            // A holder that stalls inside its transaction is cut off by the server instead of
            // blocking every writer on every host.
            &format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS};
                 SET LOCAL idle_in_transaction_session_timeout = {IDLE_IN_TX_TIMEOUT_MS};
                 SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
            ),
        )
    }

    /// A read-only transaction: every read in it sees one snapshot.
    pub(crate) fn read_tx(&self) -> anyhow::Result<Tx<'_>> {
        self.begin("BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    fn begin(&self, sqlite: &str, postgres: &str) -> anyhow::Result<Tx<'_>> {
        match self {
            Db::Sqlite { conn: c, failed } => {
                c.execute_batch(sqlite)?;
                failed.set(false);
            }
            Db::Postgres { conn, in_tx } => {
                let mut pg = conn.borrow_mut();
                if let Err(e) = pg.run(false, |pg| pg.client.batch_execute(postgres)) {
                    // A lock timeout leaves the transaction open and failed: end it.
                    let _ = pg.client.batch_execute("ROLLBACK");
                    return Err(e);
                }
                pg.failed = false;
                in_tx.set(true);
            }
        }
        Ok(Tx { db: self, open: true })
    }

    fn end_tx(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Db::Sqlite { conn: c, failed } => {
                if failed.take() && sql == "COMMIT" {
                    let _ = c.execute_batch("ROLLBACK");
                    anyhow::bail!(TX_FAILED);
                }
                Ok(c.execute_batch(sql)?)
            }
            Db::Postgres { conn, in_tx } => {
                in_tx.set(false);
                let mut pg = conn.borrow_mut();
                let failed = std::mem::take(&mut pg.failed);
                if failed && sql == "COMMIT" {
                    // Postgres would answer COMMIT with a rollback and no error.
                    let _ = pg.client.batch_execute("ROLLBACK");
                    anyhow::bail!(TX_FAILED);
                }
                pg.client
                    .batch_execute(sql)
                    .map_err(|e| anyhow::Error::new(e).context(format!("the database {:?}", pg.target)))
            }
        }
    }
}

/// What `commit` says when a statement of its transaction had failed.
const TX_FAILED: &str = "a statement of this transaction failed, so nothing of it was committed";

/// Runs `f` on SQLite; a failure inside a transaction fails the transaction (see `PgConn`).
fn sqlite_run<R>(
    c: &rusqlite::Connection,
    failed: &Cell<bool>,
    f: impl FnOnce() -> rusqlite::Result<R>,
) -> anyhow::Result<R> {
    f().map_err(|e| {
        if !c.is_autocommit() {
            failed.set(true);
        }
        e.into()
    })
}

/// An open transaction; rolled back when dropped uncommitted. Queries go through `Deref`.
pub(crate) struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    pub(crate) fn commit(mut self) -> anyhow::Result<()> {
        self.open = false;
        self.db.end_tx("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves nothing behind: the connection is broken, and the server
            // rolls back on its own (SQLite: the journal; Postgres: the session's end).
            let _ = self.db.end_tx("ROLLBACK");
        }
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect()
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_postgres(row: &postgres::Row) -> anyhow::Result<Vec<Value>> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Integer(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Integer(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Integer(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into())),
            Type::NUMERIC => row.try_get::<_, Option<Numeric>>(i)?.map(|n| Value::Integer(n.0)),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref other => anyhow::bail!("column {} has a type the store does not read: {other}", col.name()),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// A whole `NUMERIC` (what Postgres's `SUM` of a `BIGINT` returns), read as an `i64`.
struct Numeric(i64);

impl<'a> postgres::types::FromSql<'a> for Numeric {
    fn from_sql(_: &postgres::types::Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // Binary NUMERIC: digit count, weight (of the first base-10000 digit), sign, scale, digits.
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            let b = raw.get(2 * i..2 * i + 2).ok_or("short NUMERIC")?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        };
        let (ndigits, weight, sign) = (word(0)? as usize, word(1)? as i16, word(2)?);
        if sign == 0xC000 {
            return Err("NUMERIC is NaN".into());
        }
        let mut value: i128 = 0;
        for k in 0..=weight.max(-1) as i64 {
            let digit = if (k as usize) < ndigits { i128::from(word(4 + k as usize)?) } else { 0 };
            value = value * 10_000 + digit;
        }
        if weight < 0 {
            value = 0;
        }
        // Any fractional digits (there are none for sums of integers) are dropped.
        if sign == 0x4000 {
            value = -value;
        }
        Ok(Numeric(i64::try_from(value).map_err(|_| "NUMERIC out of range for i64")?))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        *ty == postgres::types::Type::NUMERIC
    }
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        // The server infers each parameter's type from the statement; write the value as that.
        match (self, ty) {
            (Value::Null, _) => Ok(postgres::types::IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Integer(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN) => {
                s.to_sql(ty, out)
            }
            (Value::Text(s), &Type::BYTEA) => s.as_bytes().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (v, ty) => Err(format!("cannot send {v:?} as a Postgres {ty}").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The store's SQL (SQLite's spelling) as Postgres reads it: `?N` parameters become `$N`,
/// `CROSS JOIN` (SQLite's way to fix the join order) becomes `JOIN`, and `INDEXED BY` hints go.
pub(crate) fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
        }
        if c == '?' && !in_string && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    let out = out.replace("CROSS JOIN", "JOIN");
    match out.find("INDEXED BY ") {
        None => out,
        Some(_) => {
            let mut words: Vec<&str> = Vec::new();
            let mut skip = 0;
            for w in out.split(' ') {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if w == "INDEXED" {
                    skip = 2;
                    continue;
                }
                words.push(w);
            }
            words.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_respelled_for_postgres() {
        assert_eq!(
            postgres_sql("SELECT '?1', x FROM a CROSS JOIN b ON b.k = a.k WHERE a.i = ?1 AND b.j = ?12"),
            "SELECT '?1', x FROM a JOIN b ON b.k = a.k WHERE a.i = $1 AND b.j = $12"
        );
        assert_eq!(
            postgres_sql("SELECT 1 FROM credits c INDEXED BY credits_by_invoice WHERE c.x = ?1"),
            "SELECT 1 FROM credits c WHERE c.x = $1"
        );
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let db = Db::on_sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB)").unwrap();
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params![7_u32, "x", b"\x00y".to_vec()]).unwrap();
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params![true, None::<String>, None::<Vec<u8>>]).unwrap();
        let rows = db
            .query_map("SELECT i, s, b FROM t ORDER BY i DESC", params![], |r| {
                Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?, r.get::<Option<Vec<u8>>>(2)?))
            })
            .unwrap();
        assert_eq!(rows, [(7, Some("x".into()), Some(b"\x00y".to_vec())), (1, None, None)]);
        let none = db.query_row("SELECT i FROM t WHERE i = 99", params![], |r| r.get::<i64>(0)).optional().unwrap();
        assert_eq!(none, None);
    }
}
