//! Lease-style distributed locks on the shared store: a holder must renew before the TTL runs out,
//! and a crashed holder's lease simply expires. Only the holder (by its random token) can renew or
//! release.

use std::sync::Arc;
use std::time::Duration;

use super::kv::{KeyValueStore, StoreResult};

#[derive(Clone)]
pub struct Locks {
    store: Arc<dyn KeyValueStore>,
}

/// Proof of holding a lock until its TTL runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    token: String,
}

impl Locks {
    pub fn new(store: Arc<dyn KeyValueStore>) -> Self {
        Self { store }
    }

    fn key(name: &str) -> String {
        format!("lock:{name}")
    }

    /// Takes the lock when nobody holds it; `None` when someone else does.
    ///
    /// # Errors
    /// The store cannot be reached.
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> StoreResult<Option<Lease>> {
        let token = uuid::Uuid::new_v4().to_string();
        let acquired = self
            .store
            .set_if_absent(&Self::key(name), token.as_bytes(), Some(ttl))
            .await?;
        Ok(acquired.then(|| Lease {
            name: name.to_owned(),
            token,
        }))
    }

    /// Extends the lease; `false` when it was lost (expired and maybe taken by another holder).
    ///
    /// # Errors
    /// The store cannot be reached.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> StoreResult<bool> {
        self.store
            .expire_if_equals(&Self::key(&lease.name), lease.token.as_bytes(), ttl)
            .await
    }

    /// Gives the lock up; `false` when it had already been lost.
    ///
    /// # Errors
    /// The store cannot be reached.
    pub async fn release(&self, lease: Lease) -> StoreResult<bool> {
        self.store
            .delete_if_equals(&Self::key(&lease.name), lease.token.as_bytes())
            .await
    }
}
