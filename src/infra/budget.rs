//! Cost-budget accounting off the request path.
//!
//! Each instance keeps, per budget key (principal and window slot), what the shared store said
//! was spent at its last flush plus what it charged since. An operation is checked against that
//! sum at once — no store round trip — and the charges go to the store in one batch every
//! [`FLUSH_INTERVAL`], whose replies bring back what every other instance spent. The first use of
//! a key on an instance reads it once.
//!
//! The price: across instances a budget is exact up to what the others charged in the last
//! interval (a tenth of a second), fine for budgets of thousands of points per hour. While the
//! store is unreachable, charges wait and are sent when it answers again; operations go through
//! (the budget fails open, like the rate limiter).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::kv::{KeyValueStore, Op, Reply, StoreResult};

/// How often charges are sent to the shared store.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Keys one instance keeps at most (a slot is about a hundred bytes): many principals (addresses
/// a client rotates through) cannot grow it without bound.
const MAX_SLOTS: usize = 100_000;

struct Slot {
    /// Spent, as the store said at the last flush (every instance's charges).
    known: i64,
    /// Charged here and being sent now.
    in_flight: i64,
    /// Charged here since.
    pending: i64,
    ttl: Duration,
    expires_at: Instant,
    /// Charged (or checked) here last.
    used_at: Instant,
}

/// Keys used here this recently are refreshed at every flush (even without charges of their
/// own), so what other instances spent shows within a flush interval.
const ACTIVE: Duration = Duration::from_secs(10);

impl Slot {
    fn used(&self) -> i64 {
        self.known + self.in_flight + self.pending
    }
}

/// What a charge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; the total spent now.
    Charged(i64),
    /// Not charged: it would pass the limit; the total spent as it stands.
    Refused(i64),
}

#[derive(Default)]
pub struct BudgetLedger {
    slots: Mutex<HashMap<String, Slot>>,
}

impl BudgetLedger {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        f(&mut self.slots.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Charges `cost` to `key` unless that passes `limit`.
    ///
    /// # Errors
    /// The store fails on the first use of `key` on this instance.
    pub async fn charge(
        &self,
        kv: &dyn KeyValueStore,
        key: &str,
        cost: i64,
        limit: i64,
        ttl: Duration,
    ) -> StoreResult<Charge> {
        let charge = |slot: &mut Slot| {
            slot.used_at = Instant::now();
            let used = slot.used();
            if used.saturating_add(cost) > limit {
                Charge::Refused(used)
            } else {
                slot.pending += cost;
                Charge::Charged(slot.used())
            }
        };
        let (found, full) =
            self.with(|slots| (slots.get_mut(key).map(charge), slots.len() >= MAX_SLOTS));
        if let Some(done) = found {
            return Ok(done);
        }
        if full {
            // Bounded memory whatever the number of principals: past the cap, new keys are
            // charged in the store directly (a round trip, as before the ledger).
            let used = kv.increment(key, cost, Some(ttl)).await?;
            return Ok(if used > limit {
                Charge::Refused(used - cost)
            } else {
                Charge::Charged(used)
            });
        }
        // First use here: what every instance spent so far.
        let known = match kv.get(key).await? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        Ok(self.with(|slots| {
            let slot = slots.entry(key.to_owned()).or_insert_with(|| Slot {
                known,
                in_flight: 0,
                pending: 0,
                ttl,
                expires_at: Instant::now() + ttl,
                used_at: Instant::now(),
            });
            slot.known = slot.known.max(known);
            charge(slot)
        }))
    }

    /// Sends what was charged since the last flush, in one batch, and learns every instance's
    /// totals from the replies (keys used here lately are refreshed with a zero charge). Expired
    /// keys are forgotten.
    ///
    /// # Errors
    /// The store fails: the charges are kept for the next flush.
    pub async fn flush(&self, kv: &dyn KeyValueStore) -> StoreResult<()> {
        let now = Instant::now();
        let sending: Vec<(String, i64, Duration)> = self.with(|slots| {
            slots.retain(|_, slot| slot.expires_at > now);
            slots
                .iter_mut()
                .filter(|(_, slot)| {
                    slot.in_flight == 0
                        && (slot.pending > 0 || now.duration_since(slot.used_at) < ACTIVE)
                })
                .map(|(key, slot)| {
                    slot.in_flight = slot.pending;
                    slot.pending = 0;
                    (key.clone(), slot.in_flight, slot.ttl)
                })
                .collect()
        });
        if sending.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op> = sending
            .iter()
            .map(|(key, delta, ttl)| Op::Increment {
                key: key.clone(),
                delta: *delta,
                ttl: Some(*ttl),
            })
            .collect();
        let replies = kv.batch(&ops).await;
        self.with(|slots| {
            for (index, (key, _, _)) in sending.iter().enumerate() {
                let Some(slot) = slots.get_mut(key) else {
                    continue;
                };
                match replies.as_ref().ok().and_then(|r| r.get(index)) {
                    Some(Reply::Count(total)) => {
                        slot.known = *total;
                        slot.in_flight = 0;
                    }
                    _ => {
                        // Not sent: charge it again next time.
                        slot.pending += slot.in_flight;
                        slot.in_flight = 0;
                    }
                }
            }
        });
        replies.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::memory::MemoryStore;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn charges_are_checked_at_once_and_reach_the_store_on_flush() {
        let store = MemoryStore::new();
        let (one, two) = (BudgetLedger::default(), BudgetLedger::default());
        assert_eq!(
            one.charge(&store, "b", 4, 10, HOUR).await.unwrap(),
            Charge::Charged(4)
        );
        assert_eq!(
            one.charge(&store, "b", 4, 10, HOUR).await.unwrap(),
            Charge::Charged(8)
        );
        // Past the limit: refused, and nothing charged.
        assert_eq!(
            one.charge(&store, "b", 4, 10, HOUR).await.unwrap(),
            Charge::Refused(8)
        );
        assert_eq!(store.get("b").await.unwrap(), None, "not sent yet");
        one.flush(&store).await.unwrap();
        assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"8"[..]));
        // Another instance starts from what the store says, and the first learns of its charges
        // at its next flush.
        assert_eq!(
            two.charge(&store, "b", 2, 10, HOUR).await.unwrap(),
            Charge::Charged(10)
        );
        two.flush(&store).await.unwrap();
        one.flush(&store).await.unwrap();
        assert_eq!(
            one.charge(&store, "b", 1, 10, HOUR).await.unwrap(),
            Charge::Refused(10)
        );
    }

    #[tokio::test]
    async fn past_the_cap_new_keys_are_charged_in_the_store() {
        let store = MemoryStore::new();
        let ledger = BudgetLedger::default();
        ledger.with(|slots| {
            for n in 0..MAX_SLOTS {
                slots.insert(
                    format!("k{n}"),
                    Slot {
                        known: 0,
                        in_flight: 0,
                        pending: 0,
                        ttl: HOUR,
                        expires_at: Instant::now() + HOUR,
                        used_at: Instant::now(),
                    },
                );
            }
        });
        assert_eq!(
            ledger.charge(&store, "new", 3, 10, HOUR).await.unwrap(),
            Charge::Charged(3)
        );
        assert_eq!(store.get("new").await.unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(ledger.with(|slots| slots.len()), MAX_SLOTS);
    }
}
