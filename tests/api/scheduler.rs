//! Recurring work: every slot of a schedule runs once across instances, as a durable job.

use std::collections::BTreeMap;
use std::time::Duration;

use multipult::infra::scheduler::{Every, Run};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use crate::helpers::TestApp;

fn metric(text: &str, result: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.starts_with("scheduled_runs_total")
                && line.contains("schedule=\"audit-retention\"")
                && line.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn each_slot_runs_once_across_two_instances() {
    let (one, two) = TestApp::spawn_pair_with(|s| {
        s.set_section(multipult::features::audit::settings::AuditSettings {
            retention_days: Some(30),
            retention_interval: Every::Interval(Duration::from_secs(1)),
        });
    })
    .await;
    tokio::time::sleep(Duration::from_millis(4200)).await;

    let jobs = multipult::entities::jobs::Entity::find()
        .filter(multipult::entities::jobs::Column::Kind.eq("audit_retention"))
        .all(&one.state.db)
        .await
        .unwrap();
    let mut per_slot: BTreeMap<i64, usize> = BTreeMap::new();
    for job in &jobs {
        let run: Run = serde_json::from_str(&job.payload).unwrap();
        assert_eq!(run.schedule, "audit-retention");
        *per_slot.entry(run.slot).or_default() += 1;
    }
    assert!(per_slot.len() >= 3, "{per_slot:?}");
    assert!(
        per_slot.values().all(|n| *n == 1),
        "a slot ran twice: {per_slot:?}"
    );

    // Each instance tried every slot; together they enqueued each once and skipped each once.
    let (a, b) = (one.metrics_text().await, two.metrics_text().await);
    let enqueued = metric(&a, "enqueued") + metric(&b, "enqueued");
    let skipped = metric(&a, "skipped") + metric(&b, "skipped");
    assert!(enqueued >= 3.0, "{a}\n{b}");
    assert!(
        (enqueued - skipped).abs() <= 1.0,
        "enqueued {enqueued}, skipped {skipped}"
    );
    // The jobs ran (retention is idempotent).
    for _ in 0..100 {
        let done = multipult::entities::jobs::Entity::find()
            .filter(multipult::entities::jobs::Column::Kind.eq("audit_retention"))
            .filter(multipult::entities::jobs::Column::State.eq("done"))
            .all(&one.state.db)
            .await
            .unwrap();
        if done.len() >= 3 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduled jobs did not run");
}
