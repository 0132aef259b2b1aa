//! Many requests' batches in one script call.
//!
//! Every request's store steps (its user state, revocation marker, rate windows, budget) go out as
//! one `BATCH` script, and concurrent requests' scripts used to go out one call each: one write to
//! the socket, one read and one script run in Redis per request. Here a batch joins a queue; at
//! most `max_in_flight` calls are out at once, and a call that goes out takes every batch waiting
//! (up to `max_steps` steps) with it. An idle instance sends each batch at once, as before; under
//! load, batches that arrive while calls are out share the next one (what ioredis calls
//! auto-pipelining). Each batch still gets exactly its own replies.
//!
//! A call takes its batches when its task starts, not when it is decided: what arrives in
//! between goes with it. A request that sends two batches at once (a cached request's entry
//! beside its caller's state: `http::prefetch`) decides two calls, and whichever starts first
//! takes both: one script call for the request, the other ends without sending. (Taken when
//! decided, they went out as two calls, on two connections.)
//!
//! The script runs a joined call atomically, like each batch alone. A step Redis refuses (say, a
//! key of the wrong type) fails only its own batch: the script catches the step's error and
//! answers it in the step's place, and the batch holding it gets it as its error. What still
//! fails every batch in a call is what fails the call: a timeout, a lost connection, an open
//! circuit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::{BATCH, RedisClient, Step, fold};
use crate::infra::kv::{StoreError, StoreResult};

type Replies = StoreResult<Vec<redis::Value>>;

pub(super) struct Coalescer {
    queue: Mutex<Queue>,
    max_in_flight: usize,
    max_steps: usize,
    stats: Arc<JoinStats>,
}

/// How well batches are joined, for `/metrics`: `store_batches_total` against
/// `store_batch_calls_total`.
#[derive(Debug, Default)]
pub struct JoinStats {
    batches: AtomicU64,
    calls: AtomicU64,
}

impl JoinStats {
    /// Batches asked for.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Script calls that carried them.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Calls out, or decided and about to take their batches.
    in_flight: usize,
}

struct Waiting {
    steps: Vec<Step>,
    reply: oneshot::Sender<Replies>,
}

impl Coalescer {
    pub(super) fn new(max_in_flight: usize, max_steps: usize) -> Self {
        Self {
            queue: Mutex::default(),
            max_in_flight: max_in_flight.max(1),
            max_steps: max_steps.max(1),
            stats: Arc::default(),
        }
    }

    pub(super) fn stats(&self) -> &Arc<JoinStats> {
        &self.stats
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The script's replies to `steps`, in order, sent with whatever else is waiting.
    pub(super) async fn run(self: &Arc<Self>, client: &RedisClient, steps: Vec<Step>) -> Replies {
        // An open circuit fails at once, as a call of its own would. (Only a look: once the
        // circuit has cooled down, the joined call itself is the probe.)
        client.breaker.check()?;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.queue();
            queue.waiting.push_back(Waiting { steps, reply });
            let lead = queue.in_flight < self.max_in_flight;
            if lead {
                queue.in_flight += 1;
            }
            lead
        };
        if lead {
            // In a task of its own: the call carries other requests' batches, so it must not
            // end when this request's future is dropped.
            tokio::spawn(Arc::clone(self).send_until_empty(client.clone()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("a batch call ended unanswered".into())))
    }

    /// The waiting batches that go out in one call: the first one, then more while they fit.
    fn take(&self, queue: &mut Queue) -> Vec<Waiting> {
        let mut steps = 0;
        let mut group = Vec::new();
        while let Some(next) = queue.waiting.front() {
            if !group.is_empty() && steps + next.steps.len() > self.max_steps {
                break;
            }
            steps += next.steps.len();
            group.extend(queue.waiting.pop_front());
        }
        group
    }

    /// Sends what waits, then whatever has gathered meanwhile, until nothing waits.
    async fn send_until_empty(self: Arc<Self>, client: RedisClient) {
        let mut flight = Flight(&self, true);
        // What does not fit (`max_steps`) goes in this task's next call, or in another's that
        // the next batch to arrive starts beside it.
        let mut group = self.take(&mut self.queue());
        loop {
            if group.is_empty() {
                // Another call took them first (see the module's note).
                let mut queue = self.queue();
                queue.in_flight -= 1;
                flight.1 = false;
                return;
            }
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let replies = call(&client, &group).await;
            answer(group, replies);
            let mut queue = self.queue();
            if queue.waiting.is_empty() {
                // Under the lock that a new batch takes to see whether a call is out.
                queue.in_flight -= 1;
                flight.1 = false;
                return;
            }
            group = self.take(&mut queue);
        }
    }
}

/// A call slot, given back if the task sending it unwinds.
struct Flight<'a>(&'a Coalescer, bool);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.queue().in_flight -= 1;
        }
    }
}

/// The group's steps, folded where several are on one key (`fold`), in one script call: a reply
/// per step of the group.
async fn call(client: &RedisClient, group: &[Waiting]) -> Replies {
    let steps: Vec<&Step> = group.iter().flat_map(|w| &w.steps).collect();
    let keys: Vec<String> = steps.iter().map(|s| fold::full_key(client, s)).collect();
    let plan = fold::plan(&steps, &keys);
    let mut invocation = BATCH.prepare_invoke();
    for sent in &plan.sent {
        fold::push(&mut invocation, sent);
    }
    let replies: Vec<redis::Value> = client
        .run(|mut c| async move { invocation.invoke_async(&mut c).await })
        .await?;
    if replies.len() != plan.sent.len() {
        return Err(StoreError::Backend(
            "batch reply has the wrong length".into(),
        ));
    }
    Ok(fold::unfold(&plan, &replies))
}

/// Hands each batch its own replies (or the call's error).
fn answer(group: Vec<Waiting>, replies: Replies) {
    match replies {
        Ok(values) if values.len() == group.iter().map(|w| w.steps.len()).sum::<usize>() => {
            let mut values = values.into_iter();
            for waiting in group {
                let own: Vec<redis::Value> = values.by_ref().take(waiting.steps.len()).collect();
                let reply = match own.iter().find_map(step_error) {
                    Some(message) => Err(StoreError::Backend(message)),
                    None => Ok(own),
                };
                // A request that has gone away no longer wants its replies.
                let _ = waiting.reply.send(reply);
            }
        }
        Ok(_) => {
            for waiting in group {
                let _ = waiting.reply.send(Err(StoreError::Backend(
                    "batch reply has the wrong length".into(),
                )));
            }
        }
        Err(error) => {
            for waiting in group {
                let _ = waiting.reply.send(Err(error.clone()));
            }
        }
    }
}

/// What the script answers in place of a step that failed: `{"\0step-error", message}`.
const STEP_ERROR: &[u8] = b"\0step-error";

/// The message of a step that failed (see `BATCH`), if `value` is one.
pub(super) fn step_error(value: &redis::Value) -> Option<String> {
    let redis::Value::Array(items) = value else {
        return None;
    };
    match items.as_slice() {
        [
            redis::Value::BulkString(marker),
            redis::Value::BulkString(message),
        ] if marker.as_slice() == STEP_ERROR => Some(String::from_utf8_lossy(message).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_is_told_from_every_reply_a_step_gives() {
        let failed = redis::Value::Array(vec![
            redis::Value::BulkString(STEP_ERROR.to_vec()),
            redis::Value::BulkString(b"WRONGTYPE Operation against a key".to_vec()),
        ]);
        assert_eq!(
            step_error(&failed).as_deref(),
            Some("WRONGTYPE Operation against a key")
        );
        for reply in [
            redis::Value::Nil,
            redis::Value::BulkString(STEP_ERROR.to_vec()),
            redis::Value::Int(3),
            redis::Value::Array(vec![
                redis::Value::Int(1),
                redis::Value::Int(2),
                redis::Value::Int(60_000),
            ]),
            redis::Value::Array(vec![
                redis::Value::Nil,
                redis::Value::Array(vec![]),
                redis::Value::BulkString(b"0".to_vec()),
            ]),
        ] {
            assert_eq!(step_error(&reply), None, "{reply:?}");
        }
    }
}
