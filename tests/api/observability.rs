//! The metrics catalogue (docs/observability.md) against what the application exposes, bounded
//! labels, and `deploy/` (dashboards and rules) querying only catalogued metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;

use crate::helpers::TestApp;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The catalogue: metric → (type, label names).
fn catalogue() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/observability.md")).unwrap();
    let section = doc
        .split("## Metrics catalogue")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .filter(|l| !l.is_empty() && l != "—")
                .collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (cells[2].to_owned(), labels),
            )
        })
        .collect()
}

/// Exposed series: metric name → label names (histogram series folded into their metric).
fn exposed(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => continue,
        };
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        let labels = found.entry(name.to_owned()).or_default();
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split('}').next()) {
            for pair in inner.split("\",") {
                if let Some((label, _)) = pair.split_once('=')
                    && label != "le"
                    && label != "quantile"
                {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    found
}

async fn scrape(app: &TestApp) -> String {
    app.metrics_text().await
}

/// A busy instance: requests, sign-ins (good and bad), a sign-up and its mail job, a socket, a
/// rejected input, a notification; then every metric it shows must be in the catalogue, with
/// exactly the catalogued labels.
#[tokio::test]
async fn every_exposed_metric_is_in_the_catalogue() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
    })
    .await;
    let session = app.signed_up("busy@example.com").await;
    app.login_body("busy@example.com", "wrong password").await;
    app.post_graphql("query Probe { apiInfo { version } }", json!({}))
        .await;
    app.gql(
        Some(&session.access),
        "mutation { updateProfile(input: { username: \"X\" }) { id } }",
        json!({}),
    )
    .await;
    let _ = app.client.get(app.url("/nowhere")).send().await;
    let socket = crate::ws::signed_in(&app, &session, "graphql-transport-ws").await;
    app.wait_for_mail("busy@example.com", "Confirm").await;
    crate::organizations::create_org(&app, &session, "busy").await;

    let text = scrape(&app).await;
    drop(socket);
    let catalogue = catalogue();
    let exposed = exposed(&text);
    for must in [
        "http_requests_total",
        "graphql_operations_total",
        "auth_logins_total",
        "auth_signups_total",
        "auth_active_sessions",
        "job_queue_depth",
        "job_queue_latency_seconds",
        "jobs_total",
        "websocket_connections",
        "input_rejected_total",
        "app_ready",
        "dependency_up",
    ] {
        assert!(exposed.contains_key(must), "{must} not exposed:\n{text}");
    }
    for (name, labels) in &exposed {
        let Some((_, documented)) = catalogue.get(name) else {
            panic!("{name} is exposed but not in docs/observability.md's catalogue");
        };
        assert!(
            labels.is_subset(documented),
            "{name}: labels {labels:?}, catalogued {documented:?}"
        );
    }
    // Histograms are histograms (buckets, for quantiles across instances).
    for (name, (kind, _)) in &catalogue {
        if kind == "histogram" && exposed.contains_key(name) {
            assert!(text.contains(&format!("{name}_bucket")), "{name}");
        }
    }
}

#[tokio::test]
async fn labels_stay_bounded_whatever_clients_send() {
    let app = TestApp::spawn().await;
    for n in 0..300 {
        let _ = app.client.get(app.url(&format!("/probe/{n}"))).send().await;
    }
    for n in 0..620 {
        app.post_graphql(&format!("query Op{n} {{ __typename }}"), json!({}))
            .await;
    }
    app.post_graphql("query Odd_name_ǅ { __typename }", json!({}))
        .await;
    let text = scrape(&app).await;
    let values = |metric: &str, label: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| {
                let start = l.find(&format!("{label}=\""))? + label.len() + 2;
                let end = l[start..].find('"')? + start;
                Some(l[start..end].to_owned())
            })
            .collect()
    };
    let routes = values("http_requests_total", "route");
    assert!(routes.len() <= 5, "{routes:?}");
    assert!(routes.contains("unmatched"));
    let operations = values("graphql_operations_total", "operation");
    assert!(
        operations.len() <= 502,
        "{} operation labels",
        operations.len()
    );
    assert!(operations.contains("other"));
}

/// Identifiers in a PromQL expression that name series (not functions, keywords or labels).
fn series_in(expr: &str) -> BTreeSet<String> {
    // Drop string literals, label matchers, ranges and grouping clauses, then take identifiers.
    let mut text = String::new();
    let mut depth_brace = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            '{' | '[' if !in_string => depth_brace += 1,
            '}' | ']' if !in_string => depth_brace -= 1,
            _ if in_string || depth_brace > 0 => {}
            _ => text.push(c),
        }
    }
    let text = regex_free_strip_groups(&text);
    const WORDS: [&str; 12] = [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "le",
    ];
    let mut found = BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let is_function = next == Some(&'(');
            // Durations inside [...] start with digits, so only identifiers reach here.
            if !is_function && !WORDS.contains(&word.as_str()) {
                found.insert(word);
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Removes `by (...)` and `without (...)` groups (their contents are labels).
fn regex_free_strip_groups(text: &str) -> String {
    let mut out = text.to_owned();
    for keyword in ["by", "without"] {
        while let Some(at) = out.find(&format!("{keyword} (")) {
            let Some(close) = out[at..].find(')') else {
                break;
            };
            out.replace_range(at..at + close + 1, " ");
        }
    }
    out
}

/// Every `expr:` of a rules file (one-line or `|` blocks).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() == "|" {
            let indent = line.len() - trimmed.len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let next_indent = next.len() - next.trim_start().len();
                if next.trim().is_empty() || next_indent <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(rest.trim().to_owned());
        }
    }
    exprs
}

#[test]
fn deploy_queries_name_catalogued_metrics() {
    let catalogue = catalogue();
    let rules_text =
        std::fs::read_to_string(root().join("deploy/prometheus/rules/multipult.yml")).unwrap();
    let recorded: BTreeSet<String> = rules_text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"))
        .map(|r| r.trim().to_owned())
        .collect();
    let known = |name: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| {
                catalogue
                    .get(*base)
                    .is_some_and(|(kind, _)| kind == "histogram")
            });
        catalogue.contains_key(name)
            || base.is_some()
            || recorded.contains(name)
            // Prometheus' own series.
            || name == "up"
    };
    let mut queries = rule_exprs(&rules_text);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/multipult.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() > 10);
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    for query in &queries {
        let names = series_in(query);
        assert!(!names.is_empty(), "no series in {query}");
        for name in names {
            assert!(
                known(&name),
                "{name} (in `{query}`) is not in the metrics catalogue"
            );
        }
    }
    // Every alert links its runbook section, and the section exists.
    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::to_lowercase)
        .collect();
    let alerts: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 10);
    for alert in alerts {
        let anchor = alert.to_lowercase();
        assert!(anchors.contains(&anchor), "no runbook section for {alert}");
        assert!(
            rules_text.contains(&format!("runbooks.md#{anchor}\"")),
            "{alert} does not link its runbook"
        );
    }
}
