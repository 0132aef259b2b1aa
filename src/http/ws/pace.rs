//! How fast a socket's messages are read (`WS_MAX_MESSAGE_RATE`).
//!
//! On HTTP every request counts against a rate limit before its body is read. On a socket only
//! operations do, and only once their message was read and parsed; pings, `complete`s for
//! unknown ids and the like cost the server a read, a parse and often an answer, unlimited. So
//! each socket has a token bucket: a message costs one token and one more per KiB, the bucket
//! refills at the rate and holds twice that. A socket in debt is not read until it is out of it:
//! its client's sends slow down (TCP backpressure) and nothing is refused or closed.

use std::time::Duration;

use tokio::time::Instant;

pub struct Pace {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    /// Whether the socket waited since its bucket was last half full (one count per episode).
    waiting: bool,
}

impl Pace {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            at: Instant::now(),
            waiting: false,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
    }

    /// Charges a message of `len` bytes, which was just read.
    pub fn charge(&mut self, len: usize) {
        self.refill();
        #[allow(clippy::cast_precision_loss)] // a message is at most WS_MAX_MESSAGE_SIZE
        let cost = 1.0 + (len / 1024) as f64;
        self.tokens -= cost;
    }

    /// `None` when the next message may be read now, else when it may; the second value is
    /// true when a socket whose bucket was at least half full starts to wait (an episode).
    pub fn next_read(&mut self) -> (Option<Instant>, bool) {
        if self.tokens < 0.0 || self.waiting {
            self.refill();
        }
        if self.tokens >= 0.0 {
            // The episode ends once the client has let the bucket fill halfway again.
            if self.tokens >= self.burst / 2.0 {
                self.waiting = false;
            }
            return (None, false);
        }
        let started = !self.waiting;
        self.waiting = true;
        let wait = Duration::from_secs_f64(-self.tokens / self.rate);
        (Some(self.at + wait), started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_messages_are_read_at_the_rate() {
        let mut pace = Pace::new(10);
        for _ in 0..=20 {
            assert_eq!(pace.next_read(), (None, false));
            pace.charge(100);
        }
        // Twenty-one read: one token in debt.
        let (Some(at), true) = pace.next_read() else {
            panic!("the 22nd message waits");
        };
        assert_eq!(at - Instant::now(), Duration::from_millis(100));
        let (Some(_), false) = pace.next_read() else {
            panic!("still waiting, the same episode");
        };
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(pace.next_read(), (None, false));
    }

    #[tokio::test(start_paused = true)]
    async fn large_messages_cost_a_token_per_kib() {
        let mut pace = Pace::new(10);
        pace.charge(64 * 1024);
        let (Some(at), true) = pace.next_read() else {
            panic!("65 tokens out of 20");
        };
        assert_eq!(at - Instant::now(), Duration::from_millis(4500));
    }
}
