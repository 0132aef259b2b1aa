//! The shared-store contracts, run against the in-process stores and (with `TEST_REDIS_URL`) Redis.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use multipult::infra::SharedStores;

use crate::helpers::{RedisCleanupGuard, test_redis_settings, unique_prefix};

/// The in-process stores, plus two Redis-backed "instances" sharing one prefix when configured.
fn backends() -> Vec<(
    &'static str,
    SharedStores,
    SharedStores,
    Option<RedisCleanupGuard>,
)> {
    let memory = SharedStores::in_process();
    let mut out = vec![("memory", memory.clone(), memory, None)];
    if let Some(redis) = test_redis_settings() {
        let mut settings = crate::helpers::test_settings();
        settings.redis = Some(redis);
        settings.key_prefix = unique_prefix();
        let a = SharedStores::from_settings(&settings).unwrap();
        let b = SharedStores::from_settings(&settings).unwrap();
        out.push((
            "redis",
            a,
            b,
            Some(RedisCleanupGuard::for_settings(&settings)),
        ));
    }
    out
}

/// What `run` gives, and on Redis (with `guard`) how many script calls it made there.
async fn counting_script_calls<T>(
    guard: Option<&RedisCleanupGuard>,
    run: impl Future<Output = T>,
) -> (T, Option<usize>) {
    let Some(guard) = guard else {
        return (run.await, None);
    };
    let mut out = None;
    let commands = crate::helpers::redis_commands(guard.prefix(), async {
        out = Some(run.await);
    })
    .await;
    let calls = commands.iter().filter(|c| c.contains("EVALSHA")).count();
    (out.expect("the work ran"), Some(calls))
}

/// What `run` gives, and on Redis (with `guard`) the commands Lua scripts ran there meanwhile.
async fn with_script_commands<T>(
    guard: Option<&RedisCleanupGuard>,
    run: impl Future<Output = T>,
) -> (T, Vec<String>) {
    let Some(guard) = guard else {
        return (run.await, Vec::new());
    };
    let mut out = None;
    let commands = crate::helpers::redis_script_commands(guard.prefix(), async {
        out = Some(run.await);
    })
    .await;
    (out.expect("the work ran"), commands)
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    for (name, stores, _, _guard) in backends() {
        let kv = &stores.kv;
        kv.set("k", b"v", Some(Duration::from_millis(150)))
            .await
            .unwrap();
        assert_eq!(
            kv.get("k").await.unwrap().as_deref(),
            Some(&b"v"[..]),
            "{name}"
        );
        assert!(
            kv.ttl("k")
                .await
                .unwrap()
                .is_some_and(|t| t <= Duration::from_millis(150)),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(kv.get("k").await.unwrap(), None, "{name}");
        kv.set("forever", b"1", None).await.unwrap();
        assert_eq!(kv.ttl("forever").await.unwrap(), None, "{name}");
        assert!(kv.delete("forever").await.unwrap(), "{name}");
        assert!(!kv.delete("forever").await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn set_if_absent_and_take_make_single_use_tokens() {
    for (name, stores, other, _guard) in backends() {
        assert!(
            stores
                .kv
                .set_if_absent("once", b"t", Some(Duration::from_secs(10)))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !other.kv.set_if_absent("once", b"u", None).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            other.kv.take("once").await.unwrap().as_deref(),
            Some(&b"t"[..]),
            "{name}"
        );
        assert_eq!(stores.kv.take("once").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn concurrent_takes_hand_a_token_to_exactly_one_caller() {
    for (name, stores, other, _guard) in backends() {
        stores.kv.set("race", b"x", None).await.unwrap();
        let takes = (0..20).map(|i| {
            let kv = if i % 2 == 0 {
                stores.kv.clone()
            } else {
                other.kv.clone()
            };
            tokio::spawn(async move { kv.take("race").await.unwrap() })
        });
        let winners = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .filter(|r| r.as_ref().unwrap().is_some())
            .count();
        assert_eq!(winners, 1, "{name}");
    }
}

#[tokio::test]
async fn counters_are_atomic_and_get_their_ttl_on_creation() {
    for (name, stores, other, _guard) in backends() {
        let adds = (0..50).map(|i| {
            let kv = if i % 2 == 0 {
                stores.kv.clone()
            } else {
                other.kv.clone()
            };
            tokio::spawn(async move {
                kv.increment("n", 2, Some(Duration::from_secs(30)))
                    .await
                    .unwrap()
            })
        });
        futures_util::future::join_all(adds).await;
        assert_eq!(
            stores.kv.increment("n", 0, None).await.unwrap(),
            100,
            "{name}"
        );
        assert!(stores.kv.ttl("n").await.unwrap().is_some(), "{name}");
        assert_eq!(
            stores.kv.increment("n", -101, None).await.unwrap(),
            -1,
            "{name}"
        );
        stores.kv.set("text", b"abc", None).await.unwrap();
        assert!(
            stores.kv.increment("text", 1, None).await.is_err(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_sliding_window_admits_the_limit_and_slides() {
    for (name, stores, other, _guard) in backends() {
        let window = Duration::from_millis(600);
        let first = stores.kv.sliding_window("w", 3, window).await.unwrap();
        assert!(
            first.allowed && first.count == 1 && first.remaining() == 2,
            "{name}: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            other
                .kv
                .sliding_window("w", 3, window)
                .await
                .unwrap()
                .allowed,
            "{name}"
        );
        assert!(
            stores
                .kv
                .sliding_window("w", 3, window)
                .await
                .unwrap()
                .allowed,
            "{name}"
        );
        let refused = other.kv.sliding_window("w", 3, window).await.unwrap();
        assert!(!refused.allowed, "{name}: {refused:?}");
        assert_eq!(refused.remaining(), 0);
        // Only the first hit ages out next, roughly 300 ms from now.
        assert!(
            refused.retry_after > Duration::ZERO
                && refused.retry_after <= Duration::from_millis(310),
            "{name}: {refused:?}"
        );
        tokio::time::sleep(refused.retry_after + Duration::from_millis(40)).await;
        let one_freed = stores.kv.sliding_window("w", 3, window).await.unwrap();
        assert!(one_freed.allowed, "{name}: {one_freed:?}");
        // The two later hits are still inside the window: no reset at a fixed boundary.
        assert!(
            !stores
                .kv
                .sliding_window("w", 3, window)
                .await
                .unwrap()
                .allowed,
            "{name}"
        );
    }
}

/// Hits that aged out go at once, however many: a client that sent a window's worth, paused and
/// came back is counted right, and on Redis the script drops them in one `LTRIM` found with a
/// few `LINDEX`es — not a command per hit (a loop of `LPOP`s held Redis, and every instance
/// waiting on it, for as long as the hits it dropped).
#[tokio::test]
async fn hits_that_aged_out_go_at_once_however_many() {
    const HITS: u64 = 3_000;
    const LIMIT: u64 = 1_000_000;
    let window = Duration::from_secs(3);
    for (name, stores, other, guard) in backends() {
        let burst = futures_util::future::join_all(
            (0..HITS).map(|_| stores.kv.sliding_window("w", LIMIT, window)),
        )
        .await;
        assert!(
            burst
                .iter()
                .all(|hit| hit.as_ref().is_ok_and(|h| h.allowed)),
            "{name}"
        );
        // A hit later in the window keeps the log alive past the burst's own expiry.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let later = other.kv.sliding_window("w", LIMIT, window).await.unwrap();
        assert_eq!(later.count, HITS + 1, "{name}: {later:?}");
        // Past the burst's window, inside the later hit's.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let (back, commands) =
            with_script_commands(guard.as_ref(), stores.kv.sliding_window("w", LIMIT, window))
                .await;
        let back = back.unwrap();
        assert!(back.allowed, "{name}: {back:?}");
        assert_eq!(
            back.count, 2,
            "{name}: the later hit and this one: {back:?}"
        );
        // The later hit is the oldest now: it ages out in under 1.5 s.
        assert!(
            back.reset_after <= Duration::from_millis(1500),
            "{name}: {back:?}"
        );
        if guard.is_some() {
            let count = |command: &str| {
                let quoted = format!("\"{command}\"");
                commands
                    .iter()
                    .filter(|line| line.contains(&quoted))
                    .count()
            };
            assert_eq!(count("LPOP"), 0, "{} LPOP", count("LPOP"));
            assert_eq!(count("LTRIM"), 1, "{} LTRIM", count("LTRIM"));
            // Galloping to 4,096 and bisecting back: two dozen, against 6,000 for a loop.
            assert!(count("LINDEX") <= 30, "{} LINDEX", count("LINDEX"));
        }
    }
}

#[tokio::test]
async fn published_messages_reach_every_subscriber_of_the_channel() {
    for (name, stores, other, _guard) in backends() {
        let mut here = stores.pubsub.subscribe("news").await.unwrap();
        let mut there = other.pubsub.subscribe("news").await.unwrap();
        let mut elsewhere = other.pubsub.subscribe("sports").await.unwrap();
        stores
            .pubsub
            .publish("news", Bytes::from_static(b"one"))
            .await
            .unwrap();
        other
            .pubsub
            .publish("news", Bytes::from_static(b"two"))
            .await
            .unwrap();
        for stream in [&mut here, &mut there] {
            for expected in [&b"one"[..], &b"two"[..]] {
                let got = tokio::time::timeout(Duration::from_secs(2), stream.next())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&got[..], expected, "{name}");
            }
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(150), elsewhere.next())
                .await
                .is_err(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_dropped_subscription_does_not_stop_the_others() {
    for (name, stores, _, _guard) in backends() {
        let first = stores.pubsub.subscribe("c").await.unwrap();
        let mut second = stores.pubsub.subscribe("c").await.unwrap();
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stores
            .pubsub
            .publish("c", Bytes::from_static(b"still"))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), second.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"still", "{name}");
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_renewable_and_released_only_by_its_holder() {
    for (name, stores, other, _guard) in backends() {
        let ttl = Duration::from_millis(300);
        let lease = stores
            .locks
            .try_acquire("job", ttl)
            .await
            .unwrap()
            .expect("free lock");
        assert!(
            other.locks.try_acquire("job", ttl).await.unwrap().is_none(),
            "{name}"
        );
        assert!(
            stores
                .locks
                .renew(&lease, Duration::from_secs(5))
                .await
                .unwrap(),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            other.locks.try_acquire("job", ttl).await.unwrap().is_none(),
            "{name}: renewed"
        );
        assert!(stores.locks.release(lease.clone()).await.unwrap(), "{name}");
        assert!(
            !stores.locks.release(lease).await.unwrap(),
            "{name}: released twice"
        );

        let expiring = other
            .locks
            .try_acquire("job", Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = stores
            .locks
            .try_acquire("job", ttl)
            .await
            .unwrap()
            .expect("expired lease is free");
        assert!(
            !other.locks.renew(&expiring, ttl).await.unwrap(),
            "{name}: a lost lease cannot renew"
        );
        assert!(
            !other.locks.release(expiring).await.unwrap(),
            "{name}: nor release another's"
        );
        assert!(stores.locks.release(next).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn both_store_kinds_answer_ping() {
    for (name, stores, _, _guard) in backends() {
        stores
            .kv
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Batches made at the same moment go out together on Redis (a few script calls, not one
/// each), and each still gets exactly its own replies — also when requests that joined a call
/// have gone away before it came back.
#[tokio::test]
async fn concurrent_batches_share_calls_and_each_gets_its_own_replies() {
    use multipult::infra::kv::{Op, Reply};
    const BATCHES: usize = 200;
    let minute = Duration::from_secs(60);
    for (name, stores, _, guard) in backends() {
        let kv = &stores.kv;
        let steps = |i: usize| {
            vec![
                Op::Increment {
                    key: format!("counter:{i}"),
                    delta: i64::try_from(i).unwrap() + 1,
                    ttl: Some(minute),
                },
                Op::Window {
                    key: "shared".into(),
                    limit: 10_000,
                    window: minute,
                },
                Op::Get(format!("counter:{i}")),
            ]
        };
        let batches: Vec<Vec<Op>> = (0..BATCHES).map(steps).collect();
        let abandoned: Vec<Vec<Op>> = (BATCHES..BATCHES + 50).map(steps).collect();
        let run = async {
            // Polled once (queued, maybe sent), then dropped.
            let mut gone: Vec<_> = abandoned.iter().map(|ops| kv.batch(ops)).collect();
            for batch in &mut gone {
                let _ = futures_util::poll!(batch.as_mut());
            }
            drop(gone);
            futures_util::future::join_all(batches.iter().map(|ops| kv.batch(ops))).await
        };
        let (replies, calls) = counting_script_calls(guard.as_ref(), run).await;
        let mut counts = std::collections::BTreeSet::new();
        for (i, replies) in replies.into_iter().enumerate() {
            let replies = replies.unwrap_or_else(|e| panic!("{name}: batch {i}: {e}"));
            let expected = i64::try_from(i).unwrap() + 1;
            let [
                Reply::Count(count),
                Reply::Window(window),
                Reply::Value(value),
            ] = <[Reply; 3]>::try_from(replies).unwrap()
            else {
                panic!("{name}: batch {i}: replies of the wrong kinds");
            };
            assert_eq!(count, expected, "{name}: batch {i}");
            assert_eq!(
                value.as_deref(),
                Some(expected.to_string().as_bytes()),
                "{name}: batch {i}"
            );
            assert!(window.allowed, "{name}: batch {i}: {window:?}");
            counts.insert(window.count);
        }
        // Every batch saw the shared window at its own count (the abandoned ones may or may not
        // have counted, depending on whether their call had gone out).
        assert_eq!(counts.len(), BATCHES, "{name}: {counts:?}");
        if let Some(calls) = calls {
            assert!(
                (1..=BATCHES / 10).contains(&calls),
                "{name}: {calls} script calls for {BATCHES} batches"
            );
        }
    }
}

/// Requests of one client joined into one call have their steps on the same key folded (one
/// read, one window step for many hits, one increment by the sum): each step still gets the
/// reply it would have had in its turn — exactly `LIMIT` hits allowed, each at its own count, the
/// rest refused at the limit; each increment a running total that some other step's total (or
/// zero) led to — and on Redis a call appends its allowed hits in one `RPUSH`.
#[tokio::test]
async fn steps_on_one_key_in_a_joined_call_get_the_replies_of_their_turn() {
    use multipult::infra::kv::{Op, Reply};
    const BATCHES: usize = 120;
    const LIMIT: u64 = 50;
    let minute = Duration::from_secs(60);
    for (name, stores, _, guard) in backends() {
        let kv = &stores.kv;
        kv.set("state", b"s", Some(minute)).await.unwrap();
        let delta = |i: usize| i64::try_from(i).unwrap() + 1;
        let batches: Vec<Vec<Op>> = (0..BATCHES)
            .map(|i| {
                vec![
                    Op::Get("state".into()),
                    Op::Window {
                        key: "client".into(),
                        limit: LIMIT,
                        window: minute,
                    },
                    Op::Increment {
                        key: "budget".into(),
                        delta: delta(i),
                        ttl: Some(minute),
                    },
                ]
            })
            .collect();
        let run = futures_util::future::join_all(batches.iter().map(|ops| kv.batch(ops)));
        let (replies, commands) = with_script_commands(guard.as_ref(), run).await;
        let mut allowed = std::collections::BTreeSet::new();
        let mut refused = 0;
        let mut totals = std::collections::BTreeMap::new();
        for (i, replies) in replies.into_iter().enumerate() {
            let replies = replies.unwrap_or_else(|e| panic!("{name}: batch {i}: {e}"));
            let [
                Reply::Value(value),
                Reply::Window(window),
                Reply::Count(total),
            ] = <[Reply; 3]>::try_from(replies).unwrap()
            else {
                panic!("{name}: batch {i}: replies of the wrong kinds");
            };
            assert_eq!(value.as_deref(), Some(&b"s"[..]), "{name}: batch {i}");
            if window.allowed {
                assert!(allowed.insert(window.count), "{name}: {window:?} twice");
            } else {
                assert_eq!(window.count, LIMIT, "{name}: batch {i}: {window:?}");
                refused += 1;
            }
            assert!(
                totals.insert(total, delta(i)).is_none(),
                "{name}: {total} twice"
            );
        }
        assert_eq!(allowed, (1..=LIMIT).collect(), "{name}");
        assert_eq!(refused, BATCHES - 50, "{name}");
        // Each total is the one before it (another step's, or nothing) plus its own delta: the
        // totals chain from 0 to the sum of all deltas.
        let sum: i64 = (0..BATCHES).map(delta).sum();
        assert_eq!(totals.keys().last(), Some(&sum), "{name}");
        for (total, own) in &totals {
            let before = total - own;
            assert!(
                before == 0 || totals.contains_key(&before),
                "{name}: {total} = {before} + {own}, and no step left {before}"
            );
        }
        if guard.is_some() {
            let appends = commands
                .iter()
                .filter(|line| line.contains("\"RPUSH\""))
                .count();
            let calls = commands
                .iter()
                .filter(|line| line.contains("\"LLEN\""))
                .count();
            assert!(
                (1..=calls).contains(&appends) && calls < BATCHES / 5,
                "{name}: {appends} appends in {calls} calls for {BATCHES} hits"
            );
        }
    }
}

/// Batch `i`'s replies, or `None` when it failed as it must: on Redis (`on_redis`) a batch with a
/// window on the victim key (a string where its list goes) fails with `WRONGTYPE` and every other
/// batch gets its replies; the in-process store refuses nothing.
fn refused_on_redis(
    name: &str,
    i: usize,
    reply: multipult::infra::kv::StoreResult<Vec<multipult::infra::kv::Reply>>,
    on_victim: bool,
    on_redis: bool,
) -> Option<Vec<multipult::infra::kv::Reply>> {
    match reply {
        Ok(replies) => {
            assert!(
                !on_victim || !on_redis,
                "{name}: batch {i} on the wrong key got {replies:?}"
            );
            Some(replies)
        }
        Err(error) => {
            assert!(on_redis && on_victim, "{name}: batch {i}: {error}");
            assert!(error.to_string().contains("WRONGTYPE"), "{name}: {error}");
            None
        }
    }
}

/// A step Redis refuses (here a rate window on a key of the wrong type) fails its own batch
/// only: batches joined into the same script call still get their replies.
#[tokio::test]
async fn a_step_redis_refuses_fails_only_its_own_batch() {
    use multipult::infra::kv::{Op, Reply};
    const BATCHES: usize = 100;
    let minute = Duration::from_secs(60);
    for (name, stores, _, guard) in backends() {
        let kv = &stores.kv;
        // Where the window of `victim` keeps its hits on Redis (a list): a string there.
        kv.set("victim:log", b"not a list", Some(minute))
            .await
            .unwrap();
        let steps = |i: usize| {
            let key = if i.is_multiple_of(2) {
                "victim".to_owned()
            } else {
                format!("fine:{i}")
            };
            vec![
                Op::Get("victim:log".into()),
                Op::Window {
                    key,
                    limit: 1_000,
                    window: minute,
                },
            ]
        };
        let batches: Vec<Vec<Op>> = (0..BATCHES).map(steps).collect();
        let run = futures_util::future::join_all(batches.iter().map(|ops| kv.batch(ops)));
        let (replies, calls) = counting_script_calls(guard.as_ref(), run).await;
        for (i, reply) in replies.into_iter().enumerate() {
            let on_victim = i.is_multiple_of(2);
            let Some(replies) = refused_on_redis(name, i, reply, on_victim, guard.is_some()) else {
                continue;
            };
            let [Reply::Value(value), Reply::Window(window)] =
                <[Reply; 2]>::try_from(replies).unwrap()
            else {
                panic!("{name}: batch {i}: replies of the wrong kinds");
            };
            assert_eq!(value.as_deref(), Some(&b"not a list"[..]), "{name}");
            assert!(window.allowed, "{name}: batch {i}: {window:?}");
        }
        if let Some(calls) = calls {
            // The batches were joined: the refused steps shared calls with the others.
            assert!(
                (1..=BATCHES / 5).contains(&calls),
                "{name}: {calls} script calls for {BATCHES} batches"
            );
        }
    }
}

/// Hits on one window folded into one step of a joined call (nothing else in the call reads that
/// key) fail together when Redis refuses the step — each of their batches gets the error — and
/// the other batches in the call get their replies.
#[tokio::test]
async fn a_folded_step_redis_refuses_fails_the_batches_folded_into_it_only() {
    use multipult::infra::kv::{Op, Reply};
    const BATCHES: usize = 60;
    let minute = Duration::from_secs(60);
    for (name, stores, _, guard) in backends() {
        let kv = &stores.kv;
        kv.set("victim:log", b"not a list", Some(minute))
            .await
            .unwrap();
        let batches: Vec<Vec<Op>> = (0..BATCHES)
            .map(|i| {
                let key = if i.is_multiple_of(3) {
                    "victim".to_owned()
                } else {
                    "fine".to_owned()
                };
                vec![Op::Window {
                    key,
                    limit: 1_000,
                    window: minute,
                }]
            })
            .collect();
        let run = futures_util::future::join_all(batches.iter().map(|ops| kv.batch(ops)));
        let (replies, calls) = counting_script_calls(guard.as_ref(), run).await;
        let mut counts = std::collections::BTreeSet::new();
        for (i, reply) in replies.into_iter().enumerate() {
            let on_victim = i.is_multiple_of(3);
            let Some(replies) = refused_on_redis(name, i, reply, on_victim, guard.is_some()) else {
                continue;
            };
            let [Reply::Window(window)] = <[Reply; 1]>::try_from(replies).unwrap() else {
                panic!("{name}: batch {i}: a reply of the wrong kind");
            };
            assert!(window.allowed, "{name}: batch {i}: {window:?}");
            if !on_victim {
                assert!(counts.insert(window.count), "{name}: {window:?} twice");
            }
        }
        // The good window counted each of its hits once, in order.
        assert_eq!(counts, (1..=40).collect(), "{name}");
        if let Some(calls) = calls {
            assert!(calls < BATCHES / 3, "{name}: {calls} calls");
        }
    }
}

/// A hit over the limit writes nothing: a client flooding past its limit costs Redis reads only
/// (nothing appended and taken back, nothing for replicas or the AOF), and its count stays at the
/// limit on both backends.
#[tokio::test]
async fn a_refused_hit_writes_nothing() {
    let minute = Duration::from_secs(60);
    for (name, stores, other, guard) in backends() {
        for _ in 0..2 {
            assert!(
                stores
                    .kv
                    .sliding_window("w", 2, minute)
                    .await
                    .unwrap()
                    .allowed
            );
        }
        let (refused, commands) = with_script_commands(guard.as_ref(), async {
            let mut last = None;
            for _ in 0..5 {
                last = Some(other.kv.sliding_window("w", 2, minute).await.unwrap());
            }
            last.expect("five hits")
        })
        .await;
        assert!(!refused.allowed, "{name}: {refused:?}");
        assert_eq!(refused.count, 2, "{name}: {refused:?}");
        if guard.is_some() {
            let writes: Vec<&String> = commands
                .iter()
                .filter(|line| {
                    ["RPUSH", "RPOP", "LPOP", "LTRIM", "PEXPIRE"]
                        .iter()
                        .any(|write| line.contains(&format!("\"{write}\"")))
                })
                .collect();
            assert!(writes.is_empty(), "{writes:#?}");
            assert!(commands.iter().any(|line| line.contains("\"LLEN\"")));
        }
    }
}

/// Redis refuses the window's append (as it does out of memory under `noeviction`; here an ACL
/// user that may not `RPUSH`): a hit its log already refuses is still refused, not let through
/// as a store failure; a hit under the limit fails as the append did.
#[tokio::test]
async fn a_hit_over_the_limit_is_refused_when_redis_refuses_the_append() {
    let (Some(redis), Some(url)) = (test_redis_settings(), crate::helpers::test_redis_url()) else {
        return; // Redis only: the in-process store has no writes to refuse.
    };
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let user = format!("no-append-{}", uuid::Uuid::new_v4().simple());
    let acl = |verb: &str| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg(verb).arg(&user);
        cmd
    };
    let () = acl("SETUSER")
        .arg(&["on", ">secret", "~*", "&*", "+@all", "-rpush"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut settings = crate::helpers::test_settings();
    settings.key_prefix = unique_prefix();
    settings.redis = Some(redis.clone());
    let _guard = RedisCleanupGuard::for_settings(&settings);
    let allowed = SharedStores::from_settings(&settings).unwrap();
    settings.redis = Some(multipult::config::RedisSettings {
        url: url
            .replacen("redis://", &format!("redis://{user}:secret@"), 1)
            .into(),
        ..redis
    });
    let refused = SharedStores::from_settings(&settings).unwrap();
    let minute = Duration::from_secs(60);
    for _ in 0..3 {
        let hit = allowed.kv.sliding_window("w", 3, minute).await.unwrap();
        assert!(hit.allowed, "{hit:?}");
    }
    let over = refused.kv.sliding_window("w", 3, minute).await;
    let under = refused.kv.sliding_window("fresh", 3, minute).await;
    let _: i64 = acl("DELUSER").query_async(&mut admin).await.unwrap();

    let over = over.expect("a hit over the limit is answered");
    assert!(!over.allowed, "{over:?}");
    assert_eq!(over.count, 3);
    assert!(over.retry_after > Duration::from_secs(50), "{over:?}");
    let error = under.expect_err("a hit under the limit cannot be counted");
    assert!(
        error.to_string().contains("can't run this command"),
        "{error}"
    );
}

/// A bounded cache keeps the most recently used entries up to its capacity and forgets what went
/// unused for its TTL, on both backends. On Redis a write drops at most a thousand entries of each
/// kind, in one `HDEL`: entries that aged out together, or a capacity lowered at a deploy, go over
/// the next writes, not in one call with a command per entry (which held Redis for everyone).
#[tokio::test]
async fn a_bounded_cache_keeps_the_recently_used_and_drops_the_rest_in_lots() {
    use multipult::infra::cache::Bounds;
    let small = Bounds {
        capacity: 3,
        ttl: Duration::from_secs(60),
    };
    for (name, a, b, guard) in backends() {
        let ns = "lru";
        for key in ["a", "b", "c"] {
            a.cache.put(ns, small, key, key.as_bytes()).await.unwrap();
        }
        assert!(
            b.cache.get(ns, small, "a").await.unwrap().is_some(),
            "{name}"
        );
        a.cache.put(ns, small, "d", b"d").await.unwrap();
        let held = |key: &'static str| {
            let b = b.clone();
            async move { b.cache.get(ns, small, key).await.unwrap() }
        };
        assert_eq!(
            held("b").await,
            None,
            "{name}: the least recently used goes"
        );
        for key in ["a", "c", "d"] {
            assert_eq!(
                held(key).await.as_deref(),
                Some(key.as_bytes()),
                "{name}: {key}"
            );
        }

        let brief = Bounds {
            capacity: 10_000,
            ttl: Duration::from_millis(1500),
        };
        const MANY: usize = 2_500;
        let keys: Vec<String> = (0..MANY).map(|i| format!("k{i}")).collect();
        futures_util::future::join_all(keys.iter().map(|k| a.cache.put("aged", brief, k, b"v")))
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        // A write in between keeps the namespace (whose keys expire a TTL after the last write)
        // while the entries age out.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        a.cache.put("aged", brief, "keeper", b"v").await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let hdels = |commands: &[String]| {
            commands
                .iter()
                .filter(|line| line.contains("\"HDEL\""))
                .count()
        };
        let (stored, commands) =
            with_script_commands(guard.as_ref(), b.cache.put("aged", brief, "fresh", b"v")).await;
        stored.unwrap();
        if guard.is_some() {
            assert_eq!(hdels(&commands), 1, "{name}: one HDEL for a thousand");
        }
        // Dropped or not yet, an entry that aged out is never served; the new one is.
        for key in [&keys[0], &keys[MANY / 2], &keys[MANY - 1]] {
            assert_eq!(
                b.cache.get("aged", brief, key).await.unwrap(),
                None,
                "{name}: {key}"
            );
        }
        assert!(b.cache.get("aged", brief, "fresh").await.unwrap().is_some());

        // A capacity lowered at once: the oldest go, a thousand per write.
        let roomy = Bounds {
            capacity: 5_000,
            ttl: Duration::from_secs(60),
        };
        futures_util::future::join_all(keys.iter().map(|k| a.cache.put("shrunk", roomy, k, b"v")))
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        let tight = Bounds {
            capacity: 10,
            ttl: Duration::from_secs(60),
        };
        let (stored, commands) =
            with_script_commands(guard.as_ref(), a.cache.put("shrunk", tight, "last", b"v")).await;
        stored.unwrap();
        if guard.is_some() {
            assert_eq!(hdels(&commands), 1, "{name}: one HDEL for a thousand");
        }
        for _ in 0..2 {
            a.cache.put("shrunk", tight, "last", b"v").await.unwrap();
        }
        assert!(
            a.cache
                .get("shrunk", tight, "last")
                .await
                .unwrap()
                .is_some(),
            "{name}"
        );
        let mut kept = 0;
        for key in &keys {
            if a.cache.get("shrunk", tight, key).await.unwrap().is_some() {
                kept += 1;
            }
        }
        assert!(
            kept < 10,
            "{name}: {kept} of the old entries kept at a capacity of 10"
        );
    }
}

/// A tagged read answers the current version of every tag of its entry, however many (an entry
/// for a long list carries one tag per item; past 8,000 a script could not hand them to one
/// command at once), and the generation; a bumped tag shows on another instance. (The in-process
/// cache has no joined read.)
#[tokio::test]
async fn a_tagged_read_gives_every_tag_version_of_a_long_entry() {
    use multipult::infra::cache::{Bounds, TagKeys, TaggedPut};
    use multipult::infra::tags;
    const TAGS: usize = 8_500;
    let bounds = Bounds {
        capacity: 10,
        ttl: Duration::from_secs(60),
    };
    let keys = TagKeys {
        prefix: tags::PREFIX,
        generation: tags::GENERATION,
    };
    for (name, a, b, _guard) in backends() {
        let entry_tags: Vec<String> = (0..TAGS).map(|i| tags::entity("Thing", i)).collect();
        let put = TaggedPut {
            tags: &keys,
            expected: 0,
            entry_tags: &entry_tags,
            payload: b"payload",
        };
        let Some(stored) = a.cache.put_tagged("long", bounds, "k", put).await.unwrap() else {
            assert_eq!(name, "memory", "only the in-process cache has no shortcut");
            continue;
        };
        assert!(stored, "{name}");
        // Past the first slice of 500, and the last one.
        let bumped = [&entry_tags[777], &entry_tags[TAGS - 1]];
        tags::bump(&b, &bumped.map(Clone::clone)).await.unwrap();
        let read = a
            .cache
            .get_tagged("long", bounds, "k", &keys)
            .await
            .unwrap()
            .expect("Redis reads tagged entries in one step");
        let value = read.value.expect("the entry is there");
        assert!(value.ends_with(b"payload"), "{name}");
        assert_eq!(read.versions.len(), TAGS, "{name}");
        for (i, version) in read.versions.iter().enumerate() {
            let expected = i64::from(i == 777 || i == TAGS - 1);
            assert_eq!(*version, expected, "{name}: the version of tag {i}");
        }
        assert_eq!(
            read.generation, 1,
            "{name}: one bump moved the generation once"
        );
    }
}

/// Redis goes away and comes back: batch calls fail fast while the circuit is open, and once it
/// has cooled down the next call is the probe that closes it — joined calls included.
#[tokio::test]
async fn batches_go_through_again_once_the_store_is_back_and_the_circuit_cooled_down() {
    use multipult::infra::kv::{Op, Reply, StoreError};
    let Some(real) = crate::helpers::test_redis_url() else {
        eprintln!("skipped: needs a Redis to come back to (TEST_REDIS_URL)");
        return;
    };
    let real = real
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    // A port nothing listens on, until a forwarder to the real Redis takes it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cooldown = Duration::from_millis(300);
    let mut settings = crate::helpers::test_settings();
    settings.redis = Some(multipult::config::RedisSettings {
        url: format!("redis://127.0.0.1:{port}").into(),
        pool_size: 2,
        timeout: Duration::from_millis(500),
        circuit_threshold: 2,
        circuit_cooldown: cooldown,
    });
    settings.key_prefix = unique_prefix();
    let _guard = RedisCleanupGuard::for_settings(&settings);
    let stores = SharedStores::from_settings(&settings).unwrap();
    let step = |key: &str| Op::Increment {
        key: key.into(),
        delta: 1,
        ttl: Some(Duration::from_secs(60)),
    };
    for _ in 0..3 {
        assert!(stores.kv.batch(&[step("a")]).await.is_err());
    }
    assert!(matches!(
        stores.kv.batch(&[step("a")]).await,
        Err(StoreError::CircuitOpen)
    ));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let forwarder = tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let real = real.clone();
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(real).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    // Several at once: one of them carries the probe, the others join it or follow.
    let steps = ["b", "c", "d", "e"].map(|key| [step(key)]);
    let replies =
        futures_util::future::join_all(steps.iter().map(|step| stores.kv.batch(step))).await;
    let settled = replies.iter().filter(|r| r.is_ok()).count();
    assert!(settled >= 1, "the probe went through: {replies:?}");
    // The circuit is closed again: every call goes through.
    for key in ["f", "g", "h"] {
        assert_eq!(
            stores.kv.batch(&[step(key)]).await.unwrap(),
            vec![Reply::Count(1)]
        );
    }
    assert_eq!(
        stores.kv.get("f").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    forwarder.abort();
}
