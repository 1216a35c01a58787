//! The campaign calendar and the tags that tie Stark Bank invoices back to it.
//!
//! Owns: which slot a moment falls in (pure arithmetic), and the tag names. Does not own:
//! storage (see `store::campaign`) or the API.

use chrono::{DateTime, Duration, Utc};

/// Every invoice and transfer stark-sweep creates carries this tag.
pub const OWNER_TAG: &str = "stark-sweep";

/// The campaign's shape and its invoices, unless configured otherwise.
pub const DEFAULT_CAMPAIGN_HOURS: u32 = 24;
pub const DEFAULT_SLOT_HOURS: u32 = 3;
pub const DEFAULT_INVOICES_MIN: u32 = 8;
pub const DEFAULT_INVOICES_MAX: u32 = 12;
/// Invoice amounts, in cents.
pub const DEFAULT_AMOUNT_MIN: i64 = 1_000;
pub const DEFAULT_AMOUNT_MAX: i64 = 50_000;
/// Days from issue to the due date, and days after it that the invoice stays payable.
pub const DEFAULT_DUE_DAYS: u32 = 2;
pub const DEFAULT_EXPIRATION_DAYS: u32 = 5;
/// How long after a create request's timeout Stark Bank may still be processing it, in
/// seconds: until then a rerun creates nothing for the slot (a lookup by tag could not yet see
/// what it made). The real figure is not documented; two minutes is a conservative choice.
pub const DEFAULT_IN_FLIGHT_MARGIN_SECS: u32 = 120;

/// A timer firing a little before a slot boundary still means that slot: systemd and cron
/// ticks drift by seconds, and a tick that lands 2 s early must not skip a slot.
const EARLY_GRACE: Duration = Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub length: Duration,
    pub slot: Duration,
}

impl Shape {
    pub fn hours(length_hours: u32, slot_hours: u32) -> Self {
        Self { length: Duration::hours(i64::from(length_hours)), slot: Duration::hours(i64::from(slot_hours)) }
    }

    pub fn from_seconds(length: i64, slot: i64) -> Self {
        Self { length: Duration::seconds(length), slot: Duration::seconds(slot) }
    }

    /// Number of slots: one at +0, +slot, ... while inside the campaign.
    pub fn slots(&self) -> u32 {
        let n = self.length.num_seconds() / self.slot.num_seconds().max(1);
        let rem = self.length.num_seconds() % self.slot.num_seconds().max(1);
        (n + i64::from(rem > 0)) as u32
    }

    fn grace(&self) -> Duration {
        EARLY_GRACE.min(self.slot / 10)
    }

    /// Where `now` falls in a campaign that started at `start`.
    pub fn slot_at(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> SlotAt {
        let elapsed = now - start;
        if elapsed >= self.length {
            return SlotAt::Ended { ended_at: start + self.length };
        }
        if elapsed < -self.grace() {
            return SlotAt::NotStarted;
        }
        let idx = ((elapsed + self.grace()).num_seconds() / self.slot.num_seconds().max(1)).max(0) as u32;
        SlotAt::Slot(idx.min(self.slots() - 1))
    }

    pub fn slot_start(&self, start: DateTime<Utc>, slot: u32) -> DateTime<Utc> {
        start + self.slot * slot as i32
    }

    /// When `slot`'s window closes: the next slot's start, or the campaign's end.
    pub fn slot_end(&self, start: DateTime<Utc>, slot: u32) -> DateTime<Utc> {
        (self.slot_start(start, slot) + self.slot).min(start + self.length)
    }

    /// Slots whose window has closed by `now`.
    pub fn closed_slots(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> Vec<u32> {
        (0..self.slots()).filter(|k| self.slot_end(start, *k) <= now).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAt {
    /// The clock is before the campaign's start (it was moved back).
    NotStarted,
    Slot(u32),
    Ended {
        ended_at: DateTime<Utc>,
    },
}

/// `c20261129t183000`: the campaign's tag, from its start.
pub fn campaign_tag(start: DateTime<Utc>) -> String {
    format!("c{}", start.format("%Y%m%dt%H%M%S"))
}

pub fn campaign_label(campaign: &str) -> String {
    format!("campaign-{campaign}")
}

pub fn slot_tag(campaign: &str, slot: u32) -> String {
    format!("slot-{campaign}-{slot}")
}

pub fn draft_tag(draft_key: &str) -> String {
    format!("draft-{draft_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64, m: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + Duration::hours(h) + Duration::minutes(m)
    }

    #[test]
    fn eight_slots_of_three_hours() {
        let s = Shape::hours(24, 3);
        assert_eq!(s.slots(), 8);
        let start = t(0, 0);
        assert_eq!(s.slot_at(start, t(0, 0)), SlotAt::Slot(0));
        assert_eq!(s.slot_at(start, t(2, 50)), SlotAt::Slot(0));
        assert_eq!(s.slot_at(start, t(2, 58)), SlotAt::Slot(1), "a tick 2 minutes early belongs to the next slot");
        assert_eq!(s.slot_at(start, t(3, 0)), SlotAt::Slot(1));
        assert_eq!(s.slot_at(start, t(21, 0)), SlotAt::Slot(7));
        assert_eq!(s.slot_at(start, t(23, 59)), SlotAt::Slot(7));
        assert_eq!(s.slot_at(start, t(24, 0)), SlotAt::Ended { ended_at: t(24, 0) });
        assert_eq!(s.slot_at(start, t(-1, 0)), SlotAt::NotStarted);
        assert_eq!(s.slot_start(start, 7), t(21, 0));
    }

    #[test]
    fn closed_slots_are_those_whose_window_passed() {
        let s = Shape::hours(24, 3);
        let start = t(0, 0);
        assert!(s.closed_slots(start, t(2, 59)).is_empty());
        assert_eq!(s.closed_slots(start, t(3, 0)), [0]);
        assert_eq!(s.closed_slots(start, t(30, 0)), (0..8).collect::<Vec<_>>());
        assert_eq!(Shape::hours(10, 3).slot_end(start, 3), t(10, 0));
    }

    #[test]
    fn uneven_lengths_round_up() {
        assert_eq!(Shape::hours(10, 3).slots(), 4);
        assert_eq!(Shape::from_seconds(60, 10).slots(), 6);
    }
}
