//! `stark-sweep kill-switch on | off | status`: one switch in the store that stops all
//! outgoing money on every host reading that store, checked in the same transaction that claims
//! a send (and again before any re-send). Intake (the listener, the event pull) goes on.

use super::{Ctx, Status, print};
use crate::cli::KillSwitchCommand;
use crate::error;
use crate::store::Store;

pub fn run(ctx: &Ctx, command: &KillSwitchCommand) -> anyhow::Result<Status> {
    let mut store = Store::open(&ctx.db)?;
    match command {
        KillSwitchCommand::On { reason, .. } => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(error::config("kill-switch on --reason: say why (status shows it to whoever looks next)"));
            }
            store.engage_kill_switch(reason, ctx.clock.now())?;
            log::warn!("kill switch engaged: {reason}");
            print(&format!(
                "kill switch engaged: no money leaves from now on ({reason}); to resume: stark-sweep kill-switch off\n"
            ))?;
            Ok(Status::Success)
        }
        KillSwitchCommand::Off { .. } => {
            if store.release_kill_switch()? {
                log::warn!("kill switch released");
                print("kill switch released: the next process-events run claims and sends again\n")?;
            } else {
                print("the kill switch was not engaged; nothing to do\n")?;
            }
            Ok(Status::Success)
        }
        KillSwitchCommand::Status { .. } => match store.kill_switch()? {
            Some((reason, since)) => {
                print(&format!("kill switch engaged since {since}: {reason}\n"))?;
                Ok(Status::Attention)
            }
            None => {
                print("kill switch not engaged\n")?;
                Ok(Status::Success)
            }
        },
    }
}
