//! The invoice step: this slot's batch of 8-12 invoices, exactly once, whatever happens.
//!
//! Order of operations, each step durable before the next:
//! 1. a process lock (another live run of this job means "in progress elsewhere");
//! 2. the slot row and its drafts, in one SQLite transaction (the claim);
//! 3. for a slot claimed earlier but not finished: look its invoices up by tag, and record them;
//! 4. one `POST /v2/invoice` with the drafts that do not exist yet;
//! 5. the invoice ids, and the slot marked issued.
//!
//! Invoices have no idempotency key at Stark Bank, so an unknown outcome is never retried
//! blindly: the next run does step 3 first.
//!
//! Owns: the campaign settings and their validation (`Plan`), the drafts, claiming and
//! completing slots, and what `status` derives from the slots (which are missed, stuck or
//! failed; where the campaign stands). Does not own: reading arguments, refusing production
//! (`cmd::issue_invoices`), printing, SQL (`store::campaign`) or the calendar (`campaign`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use rand::RngExt as _;

use crate::campaign::{self, Shape, SlotAt};
use crate::error;
use crate::people;
use crate::starkbank::resources::{ListFilter, NewInvoice};
use crate::starkbank::{ApiError, Client, time};
use crate::store::{CampaignRow, Draft, RunLock, SlotRow, SlotState, Store};

/// A sanity bound for configured amounts: R$ 1.000.000,00 (Stark Bank's real limit is undocumented).
const MAX_INVOICE_CENTS: i64 = 100_000_000;

/// The campaign's settings as configured (flags, environment, env file), before validation.
/// Errors name the environment variable at fault, as the operator sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub campaign_hours: u32,
    pub slot_hours: u32,
    pub invoices_min: u32,
    pub invoices_max: u32,
    /// Cents.
    pub amount_min: i64,
    /// Cents.
    pub amount_max: i64,
    pub due_days: u32,
    pub expiration_days: u32,
    pub in_flight_margin_secs: u32,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Plan {
    shape: Shape,
    count: (u32, u32),
    amount: (i64, i64),
    due: Duration,
    expiration: Duration,
    in_flight_margin: Duration,
}

impl Plan {
    /// Validates the settings once; a mistake is a configuration error (exit 78).
    pub fn new(s: &Settings) -> anyhow::Result<Self> {
        let length = s.campaign_hours;
        let slot = s.slot_hours;
        if slot == 0 || length == 0 || slot > length {
            return Err(error::config(format!(
                "STARK_SWEEP_CAMPAIGN_HOURS={length} / STARK_SWEEP_SLOT_HOURS={slot}: need 0 < slot <= campaign"
            )));
        }
        let count = (s.invoices_min, s.invoices_max);
        if count.0 == 0 || count.0 > count.1 || count.1 > 100 {
            return Err(error::config(format!(
                "STARK_SWEEP_INVOICES_MIN={} / STARK_SWEEP_INVOICES_MAX={}: need 1 <= min <= max <= 100 (one request per slot)",
                count.0, count.1
            )));
        }
        let amount = (s.amount_min, s.amount_max);
        if amount.0 <= 0 || amount.0 > amount.1 || amount.1 > MAX_INVOICE_CENTS {
            return Err(error::config(format!(
                "STARK_SWEEP_AMOUNT_MIN={} / STARK_SWEEP_AMOUNT_MAX={}: need 0 < min <= max <= {MAX_INVOICE_CENTS} (integer cents)",
                amount.0, amount.1
            )));
        }
        let due_days = s.due_days;
        let expiration_days = s.expiration_days;
        if due_days == 0 || expiration_days == 0 {
            return Err(error::config(
                "STARK_SWEEP_DUE_DAYS and STARK_SWEEP_EXPIRATION_DAYS must be at least 1: the sandbox never pays overdue invoices",
            ));
        }
        Ok(Self {
            shape: Shape::hours(length, slot),
            count,
            amount,
            due: Duration::days(i64::from(due_days)),
            expiration: Duration::days(i64::from(expiration_days)),
            in_flight_margin: Duration::seconds(i64::from(s.in_flight_margin_secs)),
        })
    }

    /// The shape a campaign started now would have.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Fresh drafts for a slot: distinct people, random amounts, tags that find them again.
    fn drafts(&self, campaign: &CampaignRow, slot: u32, now: DateTime<Utc>, taken: &[String]) -> Vec<Draft> {
        let mut rng = rand::rng();
        let n = rng.random_range(self.count.0..=self.count.1) as usize;
        let due = time::format_secs(now + self.due);
        people::distinct_people(&mut rng, n, taken)
            .into_iter()
            .enumerate()
            .map(|(i, person)| {
                let draft_key = format!("{}-{slot}-{i}-{:08x}", campaign.tag, rng.random::<u32>());
                Draft {
                    tags: vec![
                        campaign::OWNER_TAG.to_string(),
                        campaign::campaign_label(&campaign.tag),
                        campaign::slot_tag(&campaign.tag, slot),
                        campaign::draft_tag(&draft_key),
                    ],
                    draft_key,
                    slot,
                    position: i as u32,
                    name: person.name,
                    tax_id: person.cpf,
                    amount: rng.random_range(self.amount.0..=self.amount.1),
                    due: due.clone(),
                    expiration: self.expiration.num_seconds(),
                    invoice_id: None,
                }
            })
            .collect()
    }
}

/// What the run did.
#[derive(Debug)]
pub enum Outcome {
    Ended {
        ended_at: DateTime<Utc>,
    },
    NotStarted {
        starts_at: DateTime<Utc>,
    },
    AlreadyIssued {
        slot: u32,
        drafts: Vec<Draft>,
    },
    /// Another live run holds the lock.
    Busy,
    /// Another run claimed the slot first.
    Taken {
        slot: u32,
    },
    Issued {
        slot: u32,
        drafts: Vec<Draft>,
        created_now: usize,
    },
    DryRun {
        slot: u32,
        drafts: Vec<Draft>,
    },
}

/// An outcome's kind, as `issue-invoices --json` names it in `status` (the demo reads it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Ended,
    NotStarted,
    AlreadyIssued,
    InProgress,
    Taken,
    Issued,
    DryRun,
}

impl OutcomeKind {
    const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Ended,
        OutcomeKind::NotStarted,
        OutcomeKind::AlreadyIssued,
        OutcomeKind::InProgress,
        OutcomeKind::Taken,
        OutcomeKind::Issued,
        OutcomeKind::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ended => "ended",
            OutcomeKind::NotStarted => "not-started",
            OutcomeKind::AlreadyIssued => "already-issued",
            OutcomeKind::InProgress => "in-progress",
            OutcomeKind::Taken => "taken",
            OutcomeKind::Issued => "issued",
            OutcomeKind::DryRun => "dry-run",
        }
    }

    /// The kind `as_str` names; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Ended { .. } => OutcomeKind::Ended,
            Outcome::NotStarted { .. } => OutcomeKind::NotStarted,
            Outcome::AlreadyIssued { .. } => OutcomeKind::AlreadyIssued,
            Outcome::Busy => OutcomeKind::InProgress,
            Outcome::Taken { .. } => OutcomeKind::Taken,
            Outcome::Issued { .. } => OutcomeKind::Issued,
            Outcome::DryRun { .. } => OutcomeKind::DryRun,
        }
    }
}

/// One run: the campaign it acted on (none before the first), what it did, and the slots left
/// unfinished by earlier runs that it could not complete (this slot was still issued).
#[derive(Debug)]
pub struct Run {
    pub campaign: Option<CampaignRow>,
    pub outcome: Outcome,
    pub earlier_failures: Vec<anyhow::Error>,
}

/// `--dry-run`: the drafts this slot would get, from `store` when the database exists (a dry
/// run never creates it), without calling the API or writing anything.
pub fn dry_run(store: Option<&Store>, plan: &Plan, now: DateTime<Utc>) -> anyhow::Result<Run> {
    let (campaign, outcome) = preview(store, plan, now)?;
    Ok(Run { campaign, outcome, earlier_failures: Vec::new() })
}

fn preview(store: Option<&Store>, plan: &Plan, now: DateTime<Utc>) -> anyhow::Result<(Option<CampaignRow>, Outcome)> {
    let existing = match store {
        Some(s) => s.campaign()?,
        None => None,
    };
    let campaign = existing.clone().unwrap_or_else(|| new_campaign(plan, now));
    match campaign.shape().slot_at(campaign.started_at, now) {
        SlotAt::Ended { ended_at } => Ok((Some(campaign), Outcome::Ended { ended_at })),
        SlotAt::NotStarted => Ok((Some(campaign.clone()), Outcome::NotStarted { starts_at: campaign.started_at })),
        SlotAt::Slot(slot) => {
            if let Some(store) = store
                && let SlotState::Issued { drafts, .. } = store.slot_state(slot)?
            {
                return Ok((Some(campaign), Outcome::AlreadyIssued { slot, drafts }));
            }
            let taken = match store {
                Some(s) => s.campaign_names()?,
                None => Vec::new(),
            };
            let drafts = plan.drafts(&campaign, slot, now, &taken);
            Ok((Some(campaign), Outcome::DryRun { slot, drafts }))
        }
    }
}

fn new_campaign(plan: &Plan, now: DateTime<Utc>) -> CampaignRow {
    // Whole seconds: the start is stored as text and compared against tags.
    let start = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    CampaignRow {
        tag: campaign::campaign_tag(start),
        started_at: start,
        length_seconds: plan.shape.length.num_seconds(),
        slot_seconds: plan.shape.slot.num_seconds(),
    }
}

/// Issues the slot `now` falls in, or `chosen_slot` on purpose (the operator's `--slot N`,
/// counted from 1), after completing any slot an earlier run left unfinished. `configured` is
/// `STARKBANK_WORKSPACE_ID` when set: the credentials must act on that workspace.
pub fn issue(
    client: &Client,
    store: &mut Store,
    plan: &Plan,
    configured: Option<&str>,
    chosen_slot: Option<u32>,
    now: DateTime<Utc>,
) -> anyhow::Result<Run> {
    let mut earlier_failures = Vec::new();
    let (campaign, outcome) = issue_slot(client, store, plan, configured, chosen_slot, now, &mut earlier_failures)?;
    Ok(Run { campaign, outcome, earlier_failures })
}

fn issue_slot(
    client: &Client,
    store: &mut Store,
    plan: &Plan,
    configured: Option<&str>,
    chosen_slot: Option<u32>,
    now: DateTime<Utc>,
    earlier_failures: &mut Vec<anyhow::Error>,
) -> anyhow::Result<(Option<CampaignRow>, Outcome)> {
    let Some(lock) = store.try_run_lock("issue-invoices")? else {
        return Ok((store.campaign()?, Outcome::Busy));
    };
    // The credentials must act on this database's workspace (pinned the first time it can be
    // proven); a contradiction stops here, before anything is created.
    crate::workspace::verify(client, store, configured, now)?;
    let existing = store.campaign()?;
    if let Some(c) = &existing
        && c.shape() != plan.shape
    {
        log::warn!(
            "the running campaign keeps the shape it started with ({} s long, {} s slots); the configured shape applies to the next campaign",
            c.length_seconds,
            c.slot_seconds
        );
    }
    // `--slot N`: an operator issues a named slot on purpose (a missed one, or one that failed).
    let chosen = match chosen_slot {
        None => None,
        Some(n) => {
            let Some(c) = &existing else {
                return Err(error::config(format!(
                    "--slot {n}: no campaign has started in {}; the first issue-invoices run starts it",
                    store.location().display()
                )));
            };
            if n == 0 || n > c.slots() {
                return Err(error::config(format!("--slot {n}: the campaign has slots 1 to {}", c.slots())));
            }
            let start = c.shape().slot_start(c.started_at, n - 1);
            if start > now + Duration::minutes(5) {
                return Err(error::config(format!(
                    "--slot {n}: it starts at {}; the timer issues it then",
                    time::format_secs(start)
                )));
            }
            store.clear_failed_slot(n - 1)?;
            Some(n - 1)
        }
    };
    let campaign = existing.unwrap_or_else(|| new_campaign(plan, now));
    let at = match chosen {
        Some(k) => SlotAt::Slot(k),
        None => campaign.shape().slot_at(campaign.started_at, now),
    };
    // A batch left unfinished (its outcome unknown) is completed by the next run, whatever
    // slot that run lands in; a failure there does not stop this slot from being issued.
    // A slot that failed for good waits for `--slot N`.
    for earlier in
        store.slots()?.into_iter().filter(|s| s.issued_at.is_none() && s.failed_reason.is_none()).map(|s| s.slot)
    {
        if at == SlotAt::Slot(earlier) || chosen == Some(earlier) {
            continue;
        }
        log::info!(slot = earlier + 1; "completing slot {}, left unfinished by an earlier run", earlier + 1);
        let drafts = store.drafts(earlier)?;
        if let Err(e) = complete_slot(client, store, &lock, plan, &campaign, earlier, drafts, now) {
            log::error!(slot = earlier + 1; "slot {} is still unfinished: {}", earlier + 1, error::one_line(&e));
            earlier_failures.push(e);
        }
    }
    let slot = match at {
        SlotAt::Ended { ended_at } => return Ok((Some(campaign), Outcome::Ended { ended_at })),
        SlotAt::NotStarted => {
            let starts_at = campaign.started_at;
            return Ok((Some(campaign), Outcome::NotStarted { starts_at }));
        }
        SlotAt::Slot(slot) => slot,
    };
    // A slot refused for good waits for the operator (`--slot N`); it is not retried here.
    if chosen != Some(slot)
        && let Some(row) = store.slots()?.into_iter().find(|s| s.slot == slot && s.failed_reason.is_some())
    {
        return Err(error::attention(format!(
            "slot {}: Stark Bank refused to complete it ({}); it is not retried on its own; after fixing the cause: stark-sweep issue-invoices --slot {}",
            slot + 1,
            row.failed_reason.unwrap_or_default(),
            slot + 1
        )));
    }
    let drafts = match store.slot_state(slot)? {
        SlotState::Issued { drafts, .. } => return Ok((Some(campaign), Outcome::AlreadyIssued { slot, drafts })),
        SlotState::Claimed { drafts } => {
            log::info!(slot = slot + 1; "slot {} was claimed by an earlier run that did not finish; completing it", slot + 1);
            drafts
        }
        SlotState::Free => {
            let drafts = plan.drafts(&campaign, slot, now, &store.campaign_names()?);
            if store.claim_slot(&campaign, &drafts, now)?.is_none() {
                return Ok((Some(campaign), Outcome::Taken { slot }));
            }
            log::info!(
                slot = slot + 1, campaign = campaign.tag.as_str();
                "claimed slot {} of campaign {} with {} drafts", slot + 1, campaign.tag, drafts.len()
            );
            drafts
        }
    };
    let created_now = complete_slot(client, store, &lock, plan, &campaign, slot, drafts, now)?;
    let drafts = store.drafts(slot)?;
    // The first invoices of a new workspace make the first events: learn the workspace now, so
    // the listener can tell our events from any other workspace's from the start.
    match crate::workspace::learn(client, store, configured, now) {
        // A contradiction (STARKBANK_WORKSPACE_ID, or the database's pin) is a configuration
        // error the operator must see now: the listener would refuse our own events.
        Err(e) if error::classify(&e) == error::ExitKind::Config => return Err(e),
        Err(e) => {
            log::warn!(
                "could not learn this project's workspace yet (the next run tries again): {}",
                error::one_line(&e)
            )
        }
        Ok(_) => {}
    }
    Ok((Some(campaign), Outcome::Issued { slot, drafts, created_now }))
}

/// A run that started an attempt `elapsed` ago, with `left` of its window to go, is too late to
/// send a call that may take `longest_call`: half the margin is the slack for clocks and commits.
fn stalled_before_sending(left: Duration, elapsed: Duration, longest_call: Duration, margin: Duration) -> bool {
    margin > Duration::zero() && (elapsed > margin / 2 || left < longest_call + margin / 2)
}

/// Makes every draft of a claimed slot exist at Stark Bank exactly once. Returns how many
/// invoices this run created.
///
/// Invoices carry no idempotency key at Stark Bank, so two runs must never send the same
/// drafts: the run lock keeps a second run out, and where it cannot be trusted (a Postgres
/// lease can expire under a run that stalled), each attempt is a compare-and-set on the slot's
/// attempt number and its in-flight window, on the database's clock. A run that lost the race,
/// its lease, or too much time between starting its attempt and sending, sends nothing.
#[allow(clippy::too_many_arguments)]
fn complete_slot(
    client: &Client,
    store: &mut Store,
    lock: &RunLock,
    plan: &Plan,
    campaign: &CampaignRow,
    slot: u32,
    drafts: Vec<Draft>,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let human = slot + 1;
    let mut missing: Vec<Draft> = drafts.into_iter().filter(|d| d.invoice_id.is_none()).collect();
    if missing.is_empty() {
        store.record_invoices(slot, &[], now)?;
        return Ok(0);
    }
    // A request sent earlier may still be processed by Stark Bank (its client timed out, or the
    // process died waiting): a lookup could miss what it is creating, so create nothing yet.
    let Some(seen) = store.slot_attempt(slot)? else { anyhow::bail!("slot {human} is not claimed") };
    if let Some(until) = seen.in_flight_until
        && until > seen.db_now
    {
        return Err(error::temporary(format!(
            "slot {human}: the create request sent earlier may still be processed by Stark Bank until {}; nothing is created before then, and the first run after it looks the slot's invoices up by tag",
            time::format_secs(until)
        )));
    }
    let resumed = seen.attempted;
    if resumed {
        // An earlier attempt may have created some or all of them: find them by tag first.
        let found =
            client.query_invoices(&ListFilter::tags([campaign::slot_tag(&campaign.tag, slot)])).map_err(|e| {
                anyhow::Error::new(e).context(format!("looking up slot {human}'s invoices before completing it"))
            })?;
        let mut matched = Vec::new();
        for inv in found {
            if let Some(d) = missing.iter().find(|d| inv.tags.iter().any(|t| *t == campaign::draft_tag(&d.draft_key))) {
                matched.push((d.draft_key.clone(), inv.id.clone()));
            }
        }
        for (draft_key, invoice_id) in &matched {
            log::info!(
                invoice_id = invoice_id.as_str(), slot = human, draft_key = draft_key.as_str();
                "slot {human}: invoice {invoice_id} was created by an earlier attempt (found by tag)"
            );
        }
        store.record_invoices(slot, &matched, now)?;
        missing.retain(|d| !matched.iter().any(|(k, _)| *k == d.draft_key));
        if missing.is_empty() {
            return Ok(0);
        }
    }
    // Due dates are set when the invoices are actually issued: a slot completed days after its
    // claim must not send due dates close or past (the sandbox never pays overdue invoices).
    let fresh_due = time::format_secs(now + plan.due);
    let stale: Vec<String> = missing
        .iter()
        .filter(|d| time::parse(&d.due).is_none_or(|due| due - now < plan.due / 2))
        .map(|d| d.draft_key.clone())
        .collect();
    if !stale.is_empty() {
        log::info!(slot = human; "slot {human}: {} drafts get a new due date, {fresh_due}", stale.len());
        store.set_draft_dues(&stale, &fresh_due)?;
        for d in missing.iter_mut().filter(|d| stale.contains(&d.draft_key)) {
            d.due = fresh_due.clone();
        }
    }
    if !lock.is_held() {
        return Err(lease_lost(human));
    }
    // A create is retried only when it surely did not reach Stark Bank, but a retry may still
    // start late in the call: the window covers the whole call, every retry included.
    let longest_call = Duration::from_std(client.config().longest_call()).unwrap_or_else(|_| Duration::hours(1));
    let Some((attempt, in_flight_until)) =
        store.begin_slot_attempt(slot, seen.attempt, now, longest_call + plan.in_flight_margin)?
    else {
        return Err(error::temporary(format!(
            "slot {human}: another run started creating its invoices at the same moment; this run sent nothing, and the next run completes the slot by tag"
        )));
    };
    let started = std::time::Instant::now();
    let batch: Vec<NewInvoice> = missing
        .iter()
        .map(|d| NewInvoice {
            amount: d.amount,
            tax_id: d.tax_id.clone(),
            name: d.name.clone(),
            due: d.due.clone(),
            expiration: d.expiration,
            tags: d.tags.clone(),
        })
        .collect();
    // Stark Bank's answer may echo the payers it refused: never their names or tax ids further.
    let payers = crate::starkbank::redact::Redactor::new(missing.iter().map(|d| d.name.clone()));
    // The window counts from the attempt's start, and the request may take the whole call: a
    // run that stalled here for most of the margin could still be sending when the window
    // closes and another run looks the slot up. It sends nothing, and the slot waits. What is
    // left of the window is read on the database's clock (which runs on while this machine is
    // stopped or suspended, and which wrote the window); this process's clock counts too.
    // (A zero margin, for drills, asks for no such protection.)
    let db_now = store.clock().with_context(|| {
        format!(
            "slot {human}: reading the database's clock before sending; this run sent nothing, and the first run after {} completes the slot by tag",
            time::format_secs(in_flight_until)
        )
    })?;
    let checked = std::time::Instant::now();
    let left = in_flight_until - db_now;
    let elapsed = Duration::from_std(checked - started).unwrap_or(Duration::MAX);
    let stalled = stalled_before_sending(left, elapsed, longest_call, plan.in_flight_margin);
    if stalled || !lock.is_held() {
        return Err(if stalled {
            error::temporary(format!(
                "slot {human}: this run stalled between starting its attempt and sending it; it sent nothing, and the first run after {} looks the slot's invoices up by tag",
                time::format_secs(in_flight_until)
            ))
        } else {
            lease_lost(human)
        });
    }
    // Retries too: none starts that could still be running when the window closes, however
    // long this run stops in a backoff (half the margin is the slack for clock and commit).
    // By either clock: what the database says is left, and the call's length from the start.
    let bounded;
    let client = if plan.in_flight_margin > Duration::zero() {
        let by_db = (left - plan.in_flight_margin / 2).to_std().unwrap_or_default();
        let by_call = (longest_call + plan.in_flight_margin / 2).to_std().unwrap_or_default();
        bounded = client.finishing_by((checked + by_db).min(started + by_call));
        &bounded
    } else {
        client
    };
    let answer = client.create_invoices(&batch).map_err(|e| e.redacted(&payers));
    // Any answer means Stark Bank is done with the request; only silence keeps it in flight.
    // What it created is recorded first: should the store fail between the two, the slot is
    // complete already, or its window keeps it until a lookup finds the rest.
    if !matches!(answer, Ok(_) | Err(ApiError::OutcomeUnknown { answered: false, .. })) {
        store.clear_in_flight(slot, attempt)?;
    }
    match answer {
        Ok(created) => {
            let mut ids = Vec::new();
            for inv in &created {
                match missing.iter().find(|d| inv.tags.iter().any(|t| *t == campaign::draft_tag(&d.draft_key))) {
                    Some(d) => ids.push((d.draft_key.clone(), inv.id.clone())),
                    None => log::warn!(
                        invoice_id = inv.id.as_str(), slot = human;
                        "slot {human}: invoice {} came back without a draft tag we know", inv.id
                    ),
                }
            }
            let complete = store.record_invoices(slot, &ids, now)?;
            // The invoices are recorded: a window left open only delays the slot's next look.
            if let Err(e) = store.clear_in_flight(slot, attempt) {
                log::warn!(slot = human; "slot {human}: its in-flight window stays until {}: {e:#}", time::format_secs(in_flight_until));
            }
            for (draft_key, invoice_id) in &ids {
                log::info!(
                    invoice_id = invoice_id.as_str(), slot = human, draft_key = draft_key.as_str();
                    "slot {human}: created invoice {invoice_id}"
                );
            }
            if !complete {
                return Err(error::temporary(format!(
                    "slot {human}: Stark Bank answered with {} of {} invoices; the next run looks up the rest by tag",
                    ids.len(),
                    missing.len()
                )));
            }
            Ok(ids.len())
        }
        Err(e @ ApiError::Rejected { .. }) if !resumed => {
            // The whole request was refused, so nothing was created: forget the claim, so the
            // next run (a transient refusal) or a corrected configuration issues this slot.
            store.abandon_slot(slot, attempt)?;
            Err(anyhow::Error::new(e).context(format!("issuing slot {human}")))
        }
        Err(e @ ApiError::Rejected { .. }) => match crate::starkbank::answers::invoice_refusal(&e) {
            crate::starkbank::answers::Verdict::Transient => {
                Err(anyhow::Error::new(e).context(format!("completing slot {human} (the next run tries again)")))
            }
            _ => {
                // An earlier attempt may have created some of the slot: the claim stays, and the
                // slot is no longer retried on its own.
                let reason = e.to_string();
                store.fail_slot(slot, &reason)?;
                Err(error::attention(format!(
                    "slot {human}: Stark Bank refused to complete it: {reason}; it is not retried on its own; after fixing the cause: stark-sweep issue-invoices --slot {human}"
                )))
            }
        },
        Err(e) => {
            let what = match e {
                ApiError::OutcomeUnknown { answered: false, .. } => format!(
                    "issuing slot {human} (no answer: nothing more is created for it before {}, then the next run finds its invoices by tag)",
                    time::format_secs(in_flight_until)
                ),
                ApiError::OutcomeUnknown { .. } => {
                    format!("issuing slot {human} (the next run finds them by tag first)")
                }
                _ => format!("issuing slot {human}"),
            };
            Err(anyhow::Error::new(e).context(what))
        }
    }
}

/// The run's lease on `issue-invoices` may have passed to another host: stop before sending.
fn lease_lost(human: u32) -> anyhow::Error {
    error::temporary(format!(
        "slot {human}: this run lost its issue-invoices lease (the database did not answer its renewals in time), so another run may be completing the slot; this run sent nothing more, and the next run completes it by tag"
    ))
}

/// Where a campaign stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignState {
    NotStarted,
    Running,
    Ended,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::NotStarted => "not-started",
            CampaignState::Running => "running",
            CampaignState::Ended => "ended",
        }
    }
}

/// A campaign's progress at `now`: its state, the slot it is in (0-based) and when the next
/// one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub state: CampaignState,
    pub current: Option<u32>,
    pub next_slot_at: Option<DateTime<Utc>>,
}

impl Progress {
    pub fn of(c: &CampaignRow, now: DateTime<Utc>) -> Self {
        let shape = c.shape();
        let (state, current, next_slot_at) = match shape.slot_at(c.started_at, now) {
            SlotAt::Ended { .. } => (CampaignState::Ended, None, None),
            SlotAt::NotStarted => (CampaignState::NotStarted, None, Some(c.started_at)),
            SlotAt::Slot(k) => {
                let next = (k + 1 < c.slots()).then(|| shape.slot_start(c.started_at, k + 1));
                (CampaignState::Running, Some(k), next)
            }
        };
        Self { state, current, next_slot_at }
    }
}

/// What the slots say a human may need to know. Slots for humans: 1 to N.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotHealth {
    pub issued: usize,
    /// Claimed, not issued, not failed: the next run completes them.
    pub incomplete: Vec<u32>,
    /// Incomplete after their window closed: the timer keeps retrying them, and a human should
    /// know why they do not end.
    pub stuck: Vec<u32>,
    /// Their window closed without a claim.
    pub missed: Vec<u32>,
    /// Refused for good, with the reason: they wait for `--slot N`.
    pub failed: Vec<(u32, String)>,
}

impl SlotHealth {
    pub fn of(campaign: Option<&CampaignRow>, slots: &[SlotRow], now: DateTime<Utc>) -> Self {
        let issued = slots.iter().filter(|s| s.issued_at.is_some()).count();
        let incomplete: Vec<u32> =
            slots.iter().filter(|s| s.issued_at.is_none() && s.failed_reason.is_none()).map(|s| s.slot + 1).collect();
        let failed: Vec<(u32, String)> =
            slots.iter().filter_map(|s| s.failed_reason.clone().map(|r| (s.slot + 1, r))).collect();
        let closed: Vec<u32> = campaign.map(|c| c.shape().closed_slots(c.started_at, now)).unwrap_or_default();
        let missed: Vec<u32> =
            closed.iter().copied().filter(|k| !slots.iter().any(|s| s.slot == *k)).map(|k| k + 1).collect();
        let stuck: Vec<u32> = incomplete.iter().copied().filter(|k| closed.contains(&(k - 1))).collect();
        Self { issued, incomplete, stuck, missed, failed }
    }

    /// How many slots need a human (missed, failed or stuck).
    pub fn needing_a_human(&self) -> usize {
        self.missed.len() + self.failed.len() + self.stuck.len()
    }
}

/// Invoices by status: the statuses the events told (`known`), with every issued invoice no
/// event has mentioned yet counted as `created`.
pub fn invoice_statuses(mut known: BTreeMap<String, usize>, issued: i64) -> BTreeMap<String, usize> {
    let ours_known = known.values().sum::<usize>() as i64;
    if issued > ours_known {
        *known.entry("created".into()).or_default() += (issued - ours_known) as usize;
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review of #18: the stall check read only this process's clock, from after the
    /// attempt's commit, so a run stopped between the window's clock read in that transaction
    /// and its return (or a suspended machine) sent its create after the window closed. What is
    /// left of the window, on the database's clock, counts too.
    #[test]
    fn a_run_is_too_late_to_send_by_either_clock() {
        let s = Duration::seconds;
        let (call, margin) = (s(60), s(120));
        assert!(!stalled_before_sending(s(179), s(1), call, margin), "just started");
        assert!(stalled_before_sending(s(179), s(61), call, margin), "this process stopped");
        assert!(stalled_before_sending(s(119), s(1), call, margin), "the database's clock ran on");
        assert!(stalled_before_sending(s(-5), s(0), call, margin), "the window closed");
        assert!(!stalled_before_sending(s(-5), s(600), call, Duration::zero()), "a drill asks for none");
    }

    fn settings() -> Settings {
        Settings {
            campaign_hours: campaign::DEFAULT_CAMPAIGN_HOURS,
            slot_hours: campaign::DEFAULT_SLOT_HOURS,
            invoices_min: campaign::DEFAULT_INVOICES_MIN,
            invoices_max: campaign::DEFAULT_INVOICES_MAX,
            amount_min: campaign::DEFAULT_AMOUNT_MIN,
            amount_max: campaign::DEFAULT_AMOUNT_MAX,
            due_days: campaign::DEFAULT_DUE_DAYS,
            expiration_days: campaign::DEFAULT_EXPIRATION_DAYS,
            in_flight_margin_secs: campaign::DEFAULT_IN_FLIGHT_MARGIN_SECS,
        }
    }

    /// The demo reads `issue-invoices --json`'s status back: every kind must survive the trip.
    #[test]
    fn outcome_kinds_read_back_as_written() {
        for k in OutcomeKind::ALL {
            assert_eq!(OutcomeKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(OutcomeKind::parse("issued "), None);
    }

    #[test]
    fn plan_refuses_each_mistake_as_configuration() {
        assert_eq!(Plan::new(&settings()).unwrap().shape(), Shape::hours(24, 3));
        for bad in [
            Settings { slot_hours: 25, ..settings() },
            Settings { invoices_min: 0, ..settings() },
            Settings { invoices_max: 101, ..settings() },
            Settings { amount_min: 0, ..settings() },
            Settings { amount_max: MAX_INVOICE_CENTS + 1, ..settings() },
            Settings { due_days: 0, ..settings() },
        ] {
            let err = Plan::new(&bad).unwrap_err();
            assert_eq!(error::classify(&err), error::ExitKind::Config, "{bad:?}");
        }
    }

    #[test]
    fn slots_missed_stuck_and_failed() {
        let start = time::parse("2026-01-01T00:00:00+00:00").unwrap();
        let c = CampaignRow { tag: "c".into(), started_at: start, length_seconds: 24 * 3600, slot_seconds: 3 * 3600 };
        let row = |slot: u32, issued: bool, failed: Option<&str>| SlotRow {
            slot,
            claimed_at: "t".into(),
            issued_at: issued.then(|| "t".to_string()),
            invoices: 0,
            total: 0,
            failed_reason: failed.map(str::to_string),
        };
        // At 10:00: slots 1-3 closed (0-based 0, 1, 2); slot 4 (3) running.
        let now = start + Duration::hours(10);
        let slots = [row(0, true, None), row(2, false, None), row(3, false, Some("refused"))];
        let h = SlotHealth::of(Some(&c), &slots, now);
        assert_eq!(h.issued, 1);
        assert_eq!(h.incomplete, [3]);
        assert_eq!(h.stuck, [3]);
        assert_eq!(h.missed, [2]);
        assert_eq!(h.failed, [(4, "refused".to_string())]);
        assert_eq!(h.needing_a_human(), 3);
        let p = Progress::of(&c, now);
        assert_eq!(
            (p.state, p.current, p.next_slot_at),
            (CampaignState::Running, Some(3), Some(start + Duration::hours(12)))
        );
    }
}
