//! Anonymous sockets open per client network on this instance (`WS_MAX_ANONYMOUS_PER_ADDRESS`):
//! signed-in sockets are capped per user, and without this cap a client could hold any number
//! of anonymous ones open, each with its buffers and keepalive.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

/// Open anonymous sockets by client network ([`crate::identity::ClientInfo::network`]).
#[derive(Debug, Default)]
pub struct AddressSlots(Mutex<HashMap<ipnet::IpNet, usize>>);

/// One open socket's place; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    network: ipnet::IpNet,
}

impl AddressSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ipnet::IpNet, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more socket from `network`, unless it holds `limit` already.
    pub fn take(self: &Arc<Self>, network: ipnet::IpNet, limit: usize) -> Option<AddressSlot> {
        let mut open = self.lock();
        let count = open.entry(network).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: Arc::clone(self),
            network,
        })
    }

    /// Sockets open from `network`.
    pub fn open(&self, network: &ipnet::IpNet) -> usize {
        self.lock().get(network).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Entry::Occupied(mut entry) = open.entry(self.network) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_network_and_given_back() {
        let slots = Arc::new(AddressSlots::default());
        let a: ipnet::IpNet = "2001:db8:1:2::/64".parse().unwrap();
        let b: ipnet::IpNet = "192.0.2.7/32".parse().unwrap();
        let first = slots.take(a, 2).unwrap();
        let second = slots.take(a, 2).unwrap();
        assert!(slots.take(a, 2).is_none());
        assert!(slots.take(b, 2).is_some_and(|slot| slot.network == b));
        drop(first);
        assert_eq!(slots.open(&a), 1);
        let third = slots.take(a, 2).unwrap();
        drop((second, third));
        assert_eq!(slots.open(&a), 0);
        assert!(slots.lock().is_empty(), "no entry is left behind");
    }
}
