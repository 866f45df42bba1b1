//! When the leader's schedules tick: each active schedule's next tick, in time order, and
//! which `Fire` commands are due at a given time under each schedule's catch-up policy.
//! Owned by the leader, which loads it from the table at election and after each schedule
//! change, asks [`Firings::due`] on its ticks and proposes what it returns. Pure: no clock,
//! no table.
//!
//! Proposing a tick advances the schedule here at once; if the proposal is lost with a
//! leadership change, the next leader starts again from the table, where a tick is handled
//! at most once.

use dtc_proto::hash::HashMap;
use dtc_proto::schedule::Calendar;
use dtc_proto::schedule::{CatchUp, ScheduleSpec};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A tick to handle: submit its task (`run`) or skip it, with `missed` earlier ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fire {
    /// The schedule.
    pub name: Arc<str>,
    /// The tick (ms since the Unix epoch).
    pub tick_ms: u64,
    /// Submit its task (else skip it).
    pub run: bool,
    /// Earlier ticks skipped with it (counted up to [`Firings::MAX_PER_CALL`]).
    pub missed: u32,
}

#[derive(Debug)]
struct Active {
    calendar: Calendar,
    catch_up: CatchUp,
    next_ms: u64,
}

/// The active schedules' next ticks.
#[derive(Debug, Default)]
pub struct Firings {
    active: HashMap<Arc<str>, Active>,
    queue: BTreeSet<(u64, Arc<str>)>,
}

impl Firings {
    /// The most ticks one call of [`Firings::due`] returns (and counts as missed): the rest
    /// wait for the next call.
    pub const MAX_PER_CALL: usize = 4096;

    /// Tracks `spec`, whose last tick handled was `last_tick_ms` (replacing what was tracked
    /// under its name); a paused schedule, or one whose calendar has no more ticks, is not
    /// tracked.
    pub fn load(&mut self, spec: &ScheduleSpec, paused: bool, last_tick_ms: u64) {
        self.remove(&spec.name);
        if paused {
            return;
        }
        let Ok(calendar) = spec.calendar() else {
            return;
        };
        let Some(next_ms) = calendar.next_after(last_tick_ms) else {
            return;
        };
        let name: Arc<str> = Arc::from(spec.name.as_str());
        self.queue.insert((next_ms, Arc::clone(&name)));
        self.active.insert(
            name,
            Active {
                calendar,
                catch_up: spec.catch_up,
                next_ms,
            },
        );
    }

    /// Stops tracking a schedule.
    pub fn remove(&mut self, name: &str) {
        if let Some((name, a)) = self.active.remove_entry(name) {
            self.queue.remove(&(a.next_ms, name));
        }
    }

    /// How many schedules are tracked.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// A tracked schedule's next tick.
    pub fn next_of(&self, name: &str) -> Option<u64> {
        self.active.get(name).map(|a| a.next_ms)
    }

    /// The earliest next tick.
    pub fn next_ms(&self) -> Option<u64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// The ticks due at `now_ms`, in time order per schedule, each schedule advanced past
    /// them. A tick more than [`ScheduleSpec::LATE_MS`] old was missed: `all` runs each
    /// missed tick, `one` runs only the latest due tick (counting the ones before it as
    /// missed), `none` skips the missed ones and runs only ticks on time.
    pub fn due(&mut self, now_ms: u64) -> Vec<Fire> {
        let mut out = Vec::new();
        while out.len() < Self::MAX_PER_CALL {
            let Some((at, _)) = self.queue.first() else {
                break;
            };
            if *at > now_ms {
                break;
            }
            let Some((tick, name)) = self.queue.pop_first() else {
                break;
            };
            let Some(a) = self.active.get_mut(&name) else {
                continue;
            };
            let late = now_ms.saturating_sub(ScheduleSpec::LATE_MS);
            let (fire, last) = match a.catch_up {
                CatchUp::All => (fire(&name, tick, true, 0), tick),
                CatchUp::One => {
                    let latest = a.calendar.last_until(now_ms).unwrap_or(tick).max(tick);
                    let missed = count(&a.calendar, tick, latest);
                    (fire(&name, latest, true, missed), latest)
                }
                CatchUp::None if tick >= late => (fire(&name, tick, true, 0), tick),
                CatchUp::None => {
                    let last_late = a.calendar.last_until(late).unwrap_or(tick).max(tick);
                    let missed = count(&a.calendar, tick, last_late);
                    (fire(&name, last_late, false, missed), last_late)
                }
            };
            out.push(fire);
            match a.calendar.next_after(last) {
                Some(next) => {
                    a.next_ms = next;
                    self.queue.insert((next, name));
                }
                None => {
                    self.active.remove(&name);
                }
            }
        }
        out
    }
}

fn fire(name: &Arc<str>, tick_ms: u64, run: bool, missed: u32) -> Fire {
    Fire {
        name: Arc::clone(name),
        tick_ms,
        run,
        missed,
    }
}

/// How many ticks fall in `[from, to)`, counted up to [`Firings::MAX_PER_CALL`].
fn count(calendar: &Calendar, from: u64, to: u64) -> u32 {
    let mut n = 0u32;
    let mut at = from;
    while at < to && (n as usize) < Firings::MAX_PER_CALL {
        n += 1;
        match calendar.next_after(at) {
            Some(next) => at = next,
            None => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_953_600_000;

    fn every_second(name: &str, catch_up: CatchUp) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            cron: "* * * * * *".into(),
            tz: None,
            overlap: dtc_proto::schedule::Overlap::Allow,
            catch_up,
            kind: "noop".into(),
            payload: bytes::Bytes::new(),
            max_attempts: 1,
            options: None,
        }
    }

    fn ticks(fires: &[Fire]) -> Vec<(u64, bool, u32)> {
        fires
            .iter()
            .map(|f| ((f.tick_ms - T0) / 1000, f.run, f.missed))
            .collect()
    }

    #[test]
    fn on_time_ticks_fire_once_each_in_order() {
        let mut f = Firings::default();
        f.load(&every_second("s", CatchUp::None), false, T0);
        assert_eq!(f.next_ms(), Some(T0 + 1000));
        assert!(f.due(T0 + 999).is_empty());
        assert_eq!(ticks(&f.due(T0 + 1000)), [(1, true, 0)]);
        assert!(f.due(T0 + 1000).is_empty(), "a tick is handed out once");
        assert_eq!(ticks(&f.due(T0 + 2050)), [(2, true, 0)]);
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        // The leader comes back 5.5 s after the last tick handled.
        let now = T0 + 5_500;
        let mut all = Firings::default();
        all.load(&every_second("a", CatchUp::All), false, T0);
        assert_eq!(ticks(&all.due(now)), [1, 2, 3, 4, 5].map(|t| (t, true, 0)));
        let mut one = Firings::default();
        one.load(&every_second("o", CatchUp::One), false, T0);
        assert_eq!(
            ticks(&one.due(now)),
            [(5, true, 4)],
            "the latest, four missed"
        );
        let mut none = Firings::default();
        none.load(&every_second("n", CatchUp::None), false, T0);
        // Ticks 1 to 4 are over a second late: skipped; 5 is on time.
        assert_eq!(ticks(&none.due(now)), [(4, false, 3), (5, true, 0)]);
        assert_eq!(none.next_ms(), Some(T0 + 6_000));
    }

    #[test]
    fn paused_removed_and_reloaded_schedules() {
        let mut f = Firings::default();
        f.load(&every_second("p", CatchUp::All), true, T0);
        assert!(f.is_empty(), "a paused schedule is not tracked");
        f.load(&every_second("p", CatchUp::All), false, T0);
        f.load(&every_second("q", CatchUp::All), false, T0 + 500);
        assert_eq!(f.len(), 2);
        f.remove("p");
        assert_eq!(ticks(&f.due(T0 + 1_000)), [(1, true, 0)]);
        assert_eq!(f.due(T0 + 1_000)[..], []);
        // Reloaded from a table whose last tick is later: no tick twice.
        f.load(&every_second("q", CatchUp::All), false, T0 + 3_000);
        assert_eq!(ticks(&f.due(T0 + 4_000)), [(4, true, 0)]);
    }

    #[test]
    fn one_call_hands_out_a_bounded_number_of_ticks() {
        let mut f = Firings::default();
        f.load(&every_second("s", CatchUp::All), false, T0);
        let day = T0 + 86_400_000;
        let first = f.due(day);
        assert_eq!(first.len(), Firings::MAX_PER_CALL);
        let second = f.due(day);
        assert_eq!(
            second.first().map(|f| f.tick_ms),
            Some(T0 + 1000 * (Firings::MAX_PER_CALL as u64 + 1)),
            "the next call goes on where the last stopped"
        );
    }
}
