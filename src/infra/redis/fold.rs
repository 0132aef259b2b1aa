//! Steps on the same key in one joined call, sent once.
//!
//! Requests joined into one `BATCH` call (`coalesce`) often ask for the same things: the same
//! user's state and revocation marker, hits on the same client's rate window, increments of the
//! same budget, reads of the same cached response. The script runs a call atomically, on one
//! clock, so such steps can go out folded without any reply changing:
//! - the same read (`get`, or a cache's tagged read `tget`) goes out once and every step asking
//!   for it gets its reply;
//! - hits on one window go out as one `win` step with a hit count; the script takes them in
//!   order, each counted after the ones before it, exactly as one step each would be;
//! - increments of one counter go out as their sum; each step's reply is the sum's reply less
//!   the deltas of the steps after it (the value it would have seen in its turn).
//!
//! Only where nothing else in the call touches the key: a key that is both read and written in
//! one call (an increment and a `get` of the same counter, a window on a key a cache read uses,
//! a tag counter bumped beside a cached read of that tag) goes out step by step, in order, as
//! before. Folding moves a step to its key's first step in the call; with nothing else on the
//! key in between, that changes no reply.
//!
//! Under load this is most of what Redis does: a call carrying a dozen requests of one client
//! runs a handful of commands instead of fifty (`docs/shared-stores.md`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use super::{RedisClient, Step, TaggedRead, ms, window_key};
use crate::infra::kv::Op;

/// A step as it goes out.
#[derive(Debug, PartialEq)]
pub(super) enum Sent<'a> {
    Get(&'a str),
    Tagged(&'a TaggedRead),
    /// `hits` hits on one window, in order.
    Window {
        key: &'a str,
        limit: u64,
        window: Duration,
        hits: u64,
    },
    /// Increments of one counter, as their sum.
    Increment {
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    },
}

/// Where a step's reply comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The reply of the sent step (a read sent once for several steps, or a step of its own).
    Whole(usize),
    /// The `n`th hit of the sent window step.
    Hit(usize, usize),
    /// An increment of the sent sum: the counter once the deltas up to this one were added,
    /// that is the sum's reply less the deltas after it (`sum - upto`).
    Count { sent: usize, upto: i64 },
}

/// What a call sends, and where each of its steps' replies comes from.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    pub sent: Vec<Sent<'a>>,
    pub sources: Vec<Source>,
}

/// The key a step writes or reads under its own name, as Redis knows it (a tagged read's keys
/// are its own: see [`TaggedRead`]).
pub(super) fn full_key(client: &RedisClient, step: &Step) -> String {
    match step {
        Step::Op(Op::Get(key) | Op::Increment { key, .. }) => client.key(key),
        Step::Op(Op::Window { key, .. }) => window_key(client, key),
        Step::Tagged(_) => String::new(),
    }
}

/// The planner's maps hold one call's keys, at most `MAX_JOINED_STEPS` (512), made anew for
/// every call: a client choosing colliding keys (under a per-process random seed) could slow one
/// call at most, and SipHash's resistance cost a twentieth of a scaled-out request's
/// instructions.
type Keyed<'a, V> = HashMap<&'a str, V, foldhash::fast::RandomState>;

/// How a call's steps use one key.
#[derive(Default)]
struct Use {
    gets: bool,
    /// One of a tagged read's own keys (its entries, last uses, sequence).
    tagged: bool,
    windows: Only<(u64, Duration)>,
    /// The increments' TTL, and their sum so far (`None`: it would overflow).
    increments: Only<(Option<Duration>, Option<i64>)>,
}

/// Steps of one kind on a key: none, all alike, or some not alike (not folded).
#[derive(Default, Clone, Copy, PartialEq)]
enum Only<T> {
    #[default]
    None,
    One(T),
    Mixed,
}

impl Use {
    fn written(&self) -> bool {
        self.windows != Only::None || self.increments != Only::None
    }
}

/// Plans a call: `steps` in order, with `keys[i]` the [`full_key`] of `steps[i]`.
pub(super) fn plan<'a>(steps: &[&'a Step], keys: &'a [String]) -> Plan<'a> {
    let mut uses: Keyed<'_, Use> = Keyed::with_capacity_and_hasher(steps.len(), <_>::default());
    for (step, key) in steps.iter().zip(keys) {
        match step {
            Step::Op(Op::Get(_)) => uses.entry(key).or_default().gets = true,
            Step::Op(Op::Window { limit, window, .. }) => {
                let windows = &mut uses.entry(key).or_default().windows;
                *windows = match *windows {
                    Only::None => Only::One((*limit, *window)),
                    Only::One(policy) if policy == (*limit, *window) => Only::One(policy),
                    _ => Only::Mixed,
                };
            }
            Step::Op(Op::Increment { delta, ttl, .. }) => {
                let increments = &mut uses.entry(key).or_default().increments;
                *increments = match *increments {
                    Only::None => Only::One((*ttl, Some(*delta))),
                    Only::One((same, sum)) if same == *ttl => {
                        Only::One((same, sum.and_then(|sum| sum.checked_add(*delta))))
                    }
                    _ => Only::Mixed,
                };
            }
            Step::Tagged(read) => {
                for key in &read.keys {
                    uses.entry(key).or_default().tagged = true;
                }
            }
        }
    }
    // Tag counters a cached read reads, written in this call (a tag bumped beside a read).
    let under_written = |prefix: &str| {
        uses.iter()
            .any(|(key, use_)| use_.written() && key.starts_with(prefix))
    };
    let mut prefixes: Vec<(&str, bool)> = Vec::new();
    let mut tag_counters_written = |prefix: &'a str| match prefixes.iter().find(|p| p.0 == prefix) {
        Some(&(_, written)) => written,
        None => {
            let written = under_written(prefix);
            prefixes.push((prefix, written));
            written
        }
    };
    let mut tag_prefixes: Vec<&str> = Vec::new();
    for step in steps {
        if let Step::Tagged(read) = step
            && !tag_prefixes.contains(&read.tag_prefix.as_str())
        {
            tag_prefixes.push(&read.tag_prefix);
        }
    }
    let under_a_tag_prefix = |key: &str| tag_prefixes.iter().any(|p| key.starts_with(p));

    let unused = Use::default();
    let mut sent = Vec::with_capacity(steps.len());
    let mut sources = Vec::with_capacity(steps.len());
    let mut folded: Keyed<'_, usize> = Keyed::with_capacity_and_hasher(steps.len(), <_>::default());
    // Tagged reads sent, by field.
    let mut reads: Keyed<'_, Vec<(&TaggedRead, usize)>> = Keyed::default();
    for (step, key) in steps.iter().zip(keys) {
        let key = key.as_str();
        let use_ = uses.get(key).unwrap_or(&unused);
        let source = match step {
            Step::Op(Op::Get(_)) if !use_.written() && !use_.tagged => {
                let index = *folded.entry(key).or_insert_with(|| {
                    sent.push(Sent::Get(key));
                    sent.len() - 1
                });
                Source::Whole(index)
            }
            Step::Op(Op::Get(_)) => {
                sent.push(Sent::Get(key));
                Source::Whole(sent.len() - 1)
            }
            Step::Op(Op::Window { limit, window, .. }) => {
                let alone = matches!(use_.windows, Only::One(_))
                    && !use_.gets
                    && !use_.tagged
                    && use_.increments == Only::None
                    && !under_a_tag_prefix(key);
                match alone.then(|| folded.entry(key)) {
                    Some(Entry::Occupied(at)) => {
                        let index = *at.get();
                        let Sent::Window { hits, .. } = &mut sent[index] else {
                            unreachable!("a window's key folds windows only")
                        };
                        *hits += 1;
                        Source::Hit(index, usize::try_from(*hits - 1).unwrap_or(usize::MAX))
                    }
                    entry => {
                        sent.push(Sent::Window {
                            key,
                            limit: *limit,
                            window: *window,
                            hits: 1,
                        });
                        if let Some(Entry::Vacant(slot)) = entry {
                            slot.insert(sent.len() - 1);
                        }
                        Source::Hit(sent.len() - 1, 0)
                    }
                }
            }
            Step::Op(Op::Increment { delta, ttl, .. }) => {
                let alone = matches!(use_.increments, Only::One((_, Some(_))))
                    && !use_.gets
                    && !use_.tagged
                    && use_.windows == Only::None
                    && !under_a_tag_prefix(key);
                match alone.then(|| folded.entry(key)) {
                    Some(Entry::Occupied(at)) => {
                        let index = *at.get();
                        let Sent::Increment { delta: sum, .. } = &mut sent[index] else {
                            unreachable!("a counter's key folds increments only")
                        };
                        // Cannot overflow: the whole sum was checked above.
                        *sum += *delta;
                        Source::Count {
                            sent: index,
                            upto: *sum,
                        }
                    }
                    entry => {
                        sent.push(Sent::Increment {
                            key,
                            delta: *delta,
                            ttl: *ttl,
                        });
                        if let Some(Entry::Vacant(slot)) = entry {
                            slot.insert(sent.len() - 1);
                        }
                        Source::Count {
                            sent: sent.len() - 1,
                            upto: *delta,
                        }
                    }
                }
            }
            Step::Tagged(read) => {
                let alone = read
                    .keys
                    .iter()
                    .all(|key| !uses.get(key.as_str()).is_some_and(Use::written))
                    && !tag_counters_written(read.tag_prefix.as_str());
                let same = if alone {
                    reads
                        .get(read.field.as_str())
                        .and_then(|sent| sent.iter().find(|(other, _)| *other == read))
                } else {
                    None
                };
                match same {
                    Some(&(_, index)) => Source::Whole(index),
                    None => {
                        sent.push(Sent::Tagged(read));
                        if alone {
                            reads
                                .entry(read.field.as_str())
                                .or_default()
                                .push((read, sent.len() - 1));
                        }
                        Source::Whole(sent.len() - 1)
                    }
                }
            }
        };
        sources.push(source);
    }
    Plan { sent, sources }
}

/// Adds a sent step to a `BATCH` invocation (see the script for each step's keys and arguments).
pub(super) fn push(invocation: &mut redis::ScriptInvocation<'_>, sent: &Sent<'_>) {
    match sent {
        Sent::Get(key) => {
            invocation.key(*key).arg("get");
        }
        Sent::Window {
            key,
            limit,
            window,
            hits,
        } => {
            invocation
                .key(*key)
                .arg("win")
                .arg(*limit)
                .arg(ms(*window))
                .arg(*hits);
        }
        Sent::Increment { key, delta, ttl } => {
            invocation
                .key(*key)
                .arg("incr")
                .arg(*delta)
                .arg(ttl.map_or(0, ms));
        }
        Sent::Tagged(read) => {
            for key in &read.keys {
                invocation.key(key);
            }
            invocation
                .arg("tget")
                .arg(&read.field)
                .arg(ms(read.ttl))
                .arg(&read.tag_prefix)
                .arg(&read.generation);
        }
    }
}

/// Each step's reply, from the sent steps' `replies` (as many as `plan.sent`). A sent step that
/// failed (`{"\0step-error", message}`) fails every step folded into it.
pub(super) fn unfold(plan: &Plan<'_>, replies: &[redis::Value]) -> Vec<redis::Value> {
    plan.sources
        .iter()
        .map(|source| match *source {
            Source::Whole(index) => replies[index].clone(),
            Source::Hit(index, n) => hit(&replies[index], n),
            Source::Count { sent, upto } => match (&replies[sent], &plan.sent[sent]) {
                (redis::Value::Int(total), Sent::Increment { delta: sum, .. }) => {
                    redis::Value::Int(total - (sum - upto))
                }
                (other, _) => other.clone(),
            },
        })
        .collect()
}

/// The `n`th hit's own `{allowed, count, reset}`, from its window step's reply
/// `{count before, hits allowed, reset}`: the hits were taken in order, so the first `allowed`
/// were let through, each counted after the ones before it, and the rest refused at the count
/// the allowed ones left. A reply of another shape (a step error) is every hit's reply.
fn hit(reply: &redis::Value, n: usize) -> redis::Value {
    let redis::Value::Array(parts) = reply else {
        return reply.clone();
    };
    let (Some(redis::Value::Int(before)), Some(redis::Value::Int(allowed)), Some(reset)) =
        (parts.first(), parts.get(1), parts.get(2))
    else {
        return reply.clone();
    };
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let (ok, count) = if n < *allowed {
        (1, before.saturating_add(n).saturating_add(1))
    } else {
        (0, before.saturating_add(*allowed))
    };
    redis::Value::Array(vec![
        redis::Value::Int(ok),
        redis::Value::Int(count),
        reset.clone(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn window(key: &str) -> Step {
        Step::Op(Op::Window {
            key: key.into(),
            limit: 10,
            window: MINUTE,
        })
    }

    fn increment(key: &str, delta: i64) -> Step {
        Step::Op(Op::Increment {
            key: key.into(),
            delta,
            ttl: Some(MINUTE),
        })
    }

    fn get(key: &str) -> Step {
        Step::Op(Op::Get(key.into()))
    }

    fn read(field: &str) -> Step {
        Step::Tagged(TaggedRead {
            keys: ["c:e".into(), "c:u".into(), "c:s".into()],
            field: field.into(),
            ttl: MINUTE,
            tag_prefix: "t:".into(),
            generation: "*".into(),
        })
    }

    /// Keys as `full_key` gives them without a prefix: a window's log under `:log`.
    fn keys(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|step| match step {
                Step::Op(Op::Get(key) | Op::Increment { key, .. }) => key.clone(),
                Step::Op(Op::Window { key, .. }) => format!("{key}:log"),
                Step::Tagged(_) => String::new(),
            })
            .collect()
    }

    fn planned(steps: &[Step]) -> (Vec<String>, Vec<Source>, usize) {
        let keys = keys(steps);
        let refs: Vec<&Step> = steps.iter().collect();
        let plan = plan(&refs, &keys);
        let sent = plan.sent.iter().map(|s| format!("{s:?}")).collect();
        (sent, plan.sources, plan.sent.len())
    }

    #[test]
    fn three_requests_of_one_client_go_out_as_one_of_each() {
        let request = |cost| {
            vec![
                get("user:1"),
                get("revoked:1"),
                window("ip"),
                increment("budget:1", cost),
                read("q1"),
            ]
        };
        let steps: Vec<Step> = [3, 5, 7].into_iter().flat_map(request).collect();
        let keys = keys(&steps);
        let refs: Vec<&Step> = steps.iter().collect();
        let plan = plan(&refs, &keys);
        assert_eq!(plan.sent.len(), 5, "{:?}", plan.sent);
        assert_eq!(
            plan.sent[2],
            Sent::Window {
                key: "ip:log",
                limit: 10,
                window: MINUTE,
                hits: 3
            }
        );
        assert_eq!(
            plan.sent[3],
            Sent::Increment {
                key: "budget:1",
                delta: 15,
                ttl: Some(MINUTE)
            }
        );
        use Source::*;
        let per_request = |hit, upto| {
            vec![
                Whole(0),
                Whole(1),
                Hit(2, hit),
                Count { sent: 3, upto },
                Whole(4),
            ]
        };
        let expected: Vec<Source> = [(0, 3), (1, 8), (2, 15)]
            .into_iter()
            .flat_map(|(hit, upto)| per_request(hit, upto))
            .collect();
        assert_eq!(plan.sources, expected);

        // The replies each step would have had in its turn.
        let triple = |allowed, count| {
            redis::Value::Array(vec![
                redis::Value::Int(allowed),
                redis::Value::Int(count),
                redis::Value::Int(60_000),
            ])
        };
        let replies = vec![
            redis::Value::BulkString(b"state".to_vec()),
            redis::Value::Nil,
            // Eight hits in the window before these three; two of them fit under the limit.
            redis::Value::Array(vec![
                redis::Value::Int(8),
                redis::Value::Int(2),
                redis::Value::Int(60_000),
            ]),
            redis::Value::Int(115),
            redis::Value::Nil,
        ];
        let each = unfold(&plan, &replies);
        assert_eq!(each.len(), 15);
        assert_eq!(each[2], triple(1, 9));
        assert_eq!(each[7], triple(1, 10));
        assert_eq!(each[12], triple(0, 10));
        assert_eq!(
            [&each[3], &each[8], &each[13]],
            [
                &redis::Value::Int(103),
                &redis::Value::Int(108),
                &redis::Value::Int(115)
            ]
        );
        assert_eq!(each[5], redis::Value::BulkString(b"state".to_vec()));
    }

    #[test]
    fn a_key_read_and_written_in_one_call_goes_out_step_by_step() {
        // A counter incremented and read back; a window on a key that is also read; a tag
        // counter bumped beside reads of the tag.
        let steps = vec![
            increment("n", 1),
            get("n"),
            increment("n", 2),
            get("n"),
            window("w"),
            get("w:log"),
            window("w"),
            read("q"),
            increment("t:User", 1),
            read("q"),
        ];
        let (sent, sources, count) = planned(&steps);
        assert_eq!(count, steps.len(), "{sent:?}");
        assert_eq!(
            sources,
            (0..steps.len())
                .map(|i| match &steps[i] {
                    Step::Op(Op::Window { .. }) => Source::Hit(i, 0),
                    Step::Op(Op::Increment { delta, .. }) => Source::Count {
                        sent: i,
                        upto: *delta
                    },
                    _ => Source::Whole(i),
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn unlike_steps_on_one_key_and_an_overflowing_sum_are_not_folded() {
        let steps = vec![
            window("w"),
            Step::Op(Op::Window {
                key: "w".into(),
                limit: 99,
                window: MINUTE,
            }),
            increment("n", i64::MAX),
            increment("n", 1),
            increment("m", 1),
            Step::Op(Op::Increment {
                key: "m".into(),
                delta: 1,
                ttl: None,
            }),
            read("a"),
            read("b"),
        ];
        let (sent, _, count) = planned(&steps);
        assert_eq!(count, steps.len(), "{sent:?}");
    }

    #[test]
    fn a_failed_step_fails_every_step_folded_into_it() {
        let steps = vec![
            window("w"),
            increment("n", 1),
            window("w"),
            increment("n", 2),
        ];
        let keys = keys(&steps);
        let refs: Vec<&Step> = steps.iter().collect();
        let plan = plan(&refs, &keys);
        assert_eq!(plan.sent.len(), 2);
        let failed = redis::Value::Array(vec![
            redis::Value::BulkString(b"\0step-error".to_vec()),
            redis::Value::BulkString(b"WRONGTYPE".to_vec()),
        ]);
        let each = unfold(&plan, &[failed.clone(), failed.clone()]);
        assert!(each.iter().all(|reply| *reply == failed), "{each:?}");
    }

    #[test]
    fn each_hit_gets_its_own_outcome_from_one_window_reply() {
        let reply = |before, allowed| {
            redis::Value::Array(vec![
                redis::Value::Int(before),
                redis::Value::Int(allowed),
                redis::Value::Int(1_234),
            ])
        };
        let outcome = |value: redis::Value| match value {
            redis::Value::Array(parts) => match parts.as_slice() {
                [
                    redis::Value::Int(ok),
                    redis::Value::Int(count),
                    redis::Value::Int(1_234),
                ] => (*ok, *count),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        // All four let through, counted one after another.
        let all: Vec<_> = (0..4).map(|n| outcome(hit(&reply(0, 4), n))).collect();
        assert_eq!(all, [(1, 1), (1, 2), (1, 3), (1, 4)]);
        // The window was already full (even past a limit lowered since): every hit refused at
        // the count it found.
        let none: Vec<_> = (0..3).map(|n| outcome(hit(&reply(12, 0), n))).collect();
        assert_eq!(none, [(0, 12), (0, 12), (0, 12)]);
        // The line falls after the first hit.
        let some: Vec<_> = (0..3).map(|n| outcome(hit(&reply(9, 1), n))).collect();
        assert_eq!(some, [(1, 10), (0, 10), (0, 10)]);
    }
}
