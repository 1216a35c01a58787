//! `stark-sweep migrate-store --from PATH --to postgres://...`: moves a deployment from its
//! SQLite file to Postgres. The target is created (schema) and must hold nothing; the copy is
//! one transaction on the target, committed only when every table's row count and money sum
//! equal the source's, which this prints.

use super::{Status, print};
use crate::cli::MigrateStoreArgs;
use crate::error;
use crate::store::{self, Location};

pub fn run(args: &MigrateStoreArgs) -> anyhow::Result<Status> {
    let from =
        Location::parse(&args.from, None).map_err(|e| error::config(format!("--from: {}", error::one_line(&e))))?;
    let to = Location::parse(&args.to, args.password_file.as_deref())
        .map_err(|e| error::config(format!("--to: {}", error::one_line(&e))))?;
    let figures = store::migrate_store(&from, &to)?;
    let mut out = format!("copied {} into {}; both sides agree:\n", from.display(), to.display());
    for f in &figures {
        out.push_str(&format!("  {:<15} {}", f.table, super::count(f.rows as u64, "row", "rows")));
        if f.cents != 0 {
            out.push_str(&format!(", {}", crate::money::brl(f.cents)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "next: point STARK_SWEEP_DB at {} on every host, then start the timers and listeners again\n",
        to.display()
    ));
    print(&out)?;
    Ok(Status::Success)
}
