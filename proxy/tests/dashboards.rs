//! dashboards/ proven live: promtool checks the Prometheus configuration and
//! alert rules and runs their unit tests; a real Prometheus scrapes a real
//! 3-node group through traffic and one leader change, and every Grafana
//! panel query and every alert expression is evaluated through its HTTP API;
//! every metric name dashboards/ uses is exported by the sidecar, with HELP
//! text and bounded labels.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Prometheus scrapes and evaluates rules this often in the live test.
const SCRAPE: &str = "500ms";
/// What the test puts for Grafana's `$__rate_interval`: Grafana's own rule
/// gives max(4 × scrape interval, interval + scrape interval) = 2 s here;
/// 5 s leaves room for a late scrape on a loaded machine.
const RATE_INTERVAL: &str = "5s";

/// Alerts that must return data while the leader sidecar is stopped, with
/// the instance or node they must name.
const FIRING_DURING_FAULT: &[&str] = &["MuSidecarDown", "MuSidecarPeerDown"];

/// Alerts whose window still holds the leader change when the group has
/// recovered: they are checked empty in the healthy group before the fault
/// and only checked to evaluate after it. The reason for each:
const WINDOW_HOLDS_FAULT: &[(&str, &str)] = &[
    (
        "MuSidecarLeaderFlapping",
        "counts leader changes over 15 minutes (one here, under its threshold, but the point is the window)",
    ),
    (
        "MuSidecarFabricErrors",
        "the stopped leader's peers time out on it: fabric errors are expected around the change",
    ),
    (
        "MuSidecarPermissionSwitchesSpiking",
        "the change itself switches permissions; the window is 10 minutes",
    ),
    (
        "MuSidecarWriteErrorRatio",
        "writes waiting for the new leader may be answered TRYAGAIN; the window is 5 minutes",
    ),
    (
        "MuSidecarFailoverSlow",
        "a stopped leader on tcp is detected through the fabric's operation timeout, near the SLO",
    ),
];

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool() -> PathBuf {
    tool("promtool", "prometheus")
}

#[test]
fn promtool_checks_config_rules_and_rule_unit_tests() {
    let dir = dashboards_dir().join("prometheus");
    let limit = Duration::from_secs(30);
    let config = run_ok(
        Command::new(promtool())
            .current_dir(&dir)
            .args(["check", "config", "prometheus.yml"]),
        b"",
        limit,
    );
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = run_ok(
        Command::new(promtool())
            .current_dir(&dir)
            .args(["check", "rules", "alerts.yml"]),
        b"",
        limit,
    );
    let alerts = read(&dir.join("alerts.yml")).matches("- alert:").count();
    assert!(
        rules.contains(&format!("SUCCESS: {alerts} rules found")),
        "{rules}"
    );
    let tests = run_ok(
        Command::new(promtool())
            .current_dir(&dir)
            .args(["test", "rules", "alerts_test.yml"]),
        b"",
        limit,
    );
    assert!(tests.contains("SUCCESS"), "{tests}");
    // The unit tests cover at least these alerts.
    let unit = read(&dir.join("alerts_test.yml"));
    for alert in ["MuSidecarLeaderFlapping", "MuSidecarApplyLagGrowing"] {
        assert!(
            unit.contains(&format!("alertname: {alert}")),
            "alerts_test.yml does not test {alert}"
        );
    }
}

// === the names and labels the sidecar exports ===

/// Every `mu_sidecar_*` name written anywhere under dashboards/.
fn names_used_in_dashboards() -> BTreeMap<String, PathBuf> {
    let mut used = BTreeMap::new();
    let mut stack = vec![dashboards_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dashboards/ lists") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // the screenshot
            };
            let mut rest = text.as_str();
            while let Some(at) = rest.find("mu_sidecar_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                used.entry(tail[..end].to_string())
                    .or_insert_with(|| path.clone());
                rest = &tail[end..];
            }
        }
    }
    used
}

/// One sample line of the text exposition: name and labels.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>) {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line.split_whitespace().next().unwrap_or(""), ""),
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 2..];
        let close = after.find('"').expect("closing quote");
        labels.push((key, after[..close].to_string()));
        rest = &after[close + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    (name.to_string(), labels)
}

/// Checks `/metrics` texts from every node: each metric family has HELP
/// text; labels are from a fixed set of names, each with a few values.
fn check_exposition(texts: &[String]) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeSet::new();
    let mut values: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for text in texts {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(
                    help.trim().len() >= 10,
                    "{name} has no useful HELP text: {line:?}"
                );
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                let (name, labels) = parse_sample(line);
                for (k, v) in labels {
                    values.entry((name.clone(), k)).or_default().insert(v);
                }
                samples.insert(name);
            }
        }
    }
    assert!(
        families.len() >= 20,
        "too few metric families: {families:?}"
    );
    assert_eq!(families, helped, "families without HELP text");
    // The only labels: the node (one value per sidecar), and fixed sets of
    // classes, outcomes, roles, error kinds, transfer sides and reasons, and
    // histogram bounds.
    let allowed = [
        "node", "class", "outcome", "role", "kind", "side", "reason", "le",
    ];
    for ((metric, label), vals) in &values {
        assert!(
            allowed.contains(&label.as_str()),
            "{metric} has label {label:?} ({vals:?}); bounded labels only: {allowed:?}"
        );
        let bound = if label == "le" { 40 } else { 12 };
        assert!(
            vals.len() <= bound,
            "{metric}{{{label}}} takes {} values: {vals:?}",
            vals.len()
        );
        for v in vals {
            assert!(
                !v.contains(':') && !v.contains("key"),
                "{metric}{{{label}=\"{v}\"}} looks like an address or a key"
            );
        }
    }
    let nodes = &values[&("mu_sidecar_ready".to_string(), "node".to_string())];
    assert_eq!(nodes.len(), texts.len(), "one node label per sidecar");
    samples.extend(families);
    samples
}

/// Every `mu_sidecar_*` name used under dashboards/ must be exported.
fn check_dashboard_names(exported: &BTreeSet<String>) {
    let used = names_used_in_dashboards();
    assert!(used.len() >= 20, "too few names found: {used:?}");
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, file)| format!("{name} (in {})", file.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboards/ uses metrics the sidecar does not export: {missing:#?}\nexported: {exported:#?}"
    );
}

// === a real Prometheus ===

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

struct Prometheus {
    proc: Proc,
    addr: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
    started: f64,
}

impl Prometheus {
    /// Starts Prometheus with dashboards/prometheus/prometheus.yml and
    /// alerts.yml, the scrape and evaluation intervals shortened, node 1
    /// and 2 as static targets and node 3 through file discovery, all in
    /// group "test".
    fn start(c: &Cluster) -> Prometheus {
        let src = dashboards_dir().join("prometheus");
        let dir = temp_dir("prometheus");
        std::fs::create_dir_all(dir.join("targets")).expect("targets dir");
        std::fs::copy(src.join("alerts.yml"), dir.join("alerts.yml")).expect("copy alerts");
        let replace = |text: String, from: &str, to: &str| {
            assert!(text.contains(from), "expected {from:?} in:\n{text}");
            text.replace(from, to)
        };
        let quoted = |nodes: &[&Node]| {
            nodes
                .iter()
                .map(|n| format!("\"{}\"", n.http))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut config = read(&src.join("prometheus.yml"));
        config = replace(
            config,
            "scrape_interval: 5s",
            &format!("scrape_interval: {SCRAPE}"),
        );
        config = replace(config, "scrape_timeout: 4s", "scrape_timeout: 400ms");
        config = replace(
            config,
            "evaluation_interval: 5s",
            &format!("evaluation_interval: {SCRAPE}"),
        );
        config = replace(
            config,
            "\"127.0.0.1:9001\", \"127.0.0.1:9002\", \"127.0.0.1:9003\"",
            &quoted(&[&c.nodes[0], &c.nodes[1]]),
        );
        config = replace(config, "group: local", "group: test");
        config = replace(config, "refresh_interval: 30s", "refresh_interval: 1s");
        std::fs::write(dir.join("prometheus.yml"), &config).expect("write config");
        let mut sd = read(&src.join("targets/orders.yml.example"));
        sd = replace(
            sd,
            "\"10.0.0.11:9379\", \"10.0.0.12:9379\", \"10.0.0.13:9379\"",
            &quoted(&[&c.nodes[2]]),
        );
        sd = replace(sd, "group: orders", "group: test");
        std::fs::write(dir.join("targets/test.yml"), sd).expect("write file_sd targets");
        let checked = run_ok(
            Command::new(promtool())
                .current_dir(&dir)
                .args(["check", "config", "prometheus.yml"]),
            b"",
            Duration::from_secs(30),
        );
        assert!(checked.contains("SUCCESS"), "{checked}");

        let addr = free_addr();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(tool("prometheus", "prometheus"))
            .current_dir(&dir)
            .args([
                "--config.file=prometheus.yml".to_string(),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={addr}"),
                "--log.level=warn".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            proc: Proc {
                child: Some(child),
                name: "prometheus".into(),
            },
            addr,
            log,
            dir,
            started: unix_now(),
        };
        wait_for(Duration::from_secs(20), "Prometheus to be ready", || {
            matches!(http_get(p.addr, "/-/ready"), Some((200, _))).then_some(())
        });
        p
    }

    /// GETs an API path; the parsed JSON body, whatever the status.
    fn api(&mut self, path: &str) -> Value {
        let (code, body) = http_get(self.addr, path).unwrap_or_else(|| {
            assert!(
                self.proc.is_running(),
                "prometheus exited:\n{}",
                self.logs()
            );
            panic!("prometheus did not answer {path}\n{}", self.logs())
        });
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {code}, not JSON ({e}): {body}"))
    }

    /// An instant query; panics with Prometheus' error if it fails.
    fn query(&mut self, q: &str) -> Vec<Value> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(q)));
        assert_eq!(v["status"], "success", "query {q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query from Prometheus' start to now, one point a second, as
    /// Grafana runs a panel.
    fn query_range(&mut self, q: &str) -> Vec<Value> {
        let path = format!(
            "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step=1",
            encode(q),
            self.started,
            unix_now()
        );
        let v = self.api(&path);
        assert_eq!(v["status"], "success", "range query {q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a scalar-like instant query, if any.
    fn value(&mut self, q: &str) -> Option<f64> {
        let r = self.query(q);
        r.first()?["value"][1].as_str()?.parse().ok()
    }

    fn wait_value(&mut self, q: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let me = std::cell::RefCell::new(self);
        wait_explained(
            Duration::from_secs(20),
            || me.borrow_mut().value(q).filter(|v| ok(*v)),
            || {
                let mut p = me.borrow_mut();
                format!(
                    "timed out waiting for {what} ({q} = {:?})\n{}",
                    p.query(q),
                    p.logs()
                )
            },
        )
    }

    /// The alerting rules as Prometheus loaded them: name → expression.
    fn alert_rules(&mut self) -> BTreeMap<String, String> {
        let v = self.api("/api/v1/rules?type=alert");
        assert_eq!(v["status"], "success", "{v}");
        let mut rules = BTreeMap::new();
        for g in v["data"]["groups"].as_array().expect("groups") {
            for r in g["rules"].as_array().expect("rules") {
                let name = r["name"].as_str().expect("name").to_string();
                let health = r["health"].as_str().unwrap_or("");
                assert!(
                    health != "err",
                    "rule {name} fails to evaluate: {}",
                    r["lastError"]
                );
                for field in ["summary", "description"] {
                    assert!(
                        r["annotations"][field]
                            .as_str()
                            .is_some_and(|s| s.len() > 10),
                        "{name} has no {field}"
                    );
                }
                assert!(
                    ["critical", "warning"]
                        .contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                    "{name} has no severity"
                );
                rules.insert(name, r["query"].as_str().expect("query").to_string());
            }
        }
        rules
    }

    fn logs(&self) -> String {
        format!("--- prometheus ---\n{}", read(&self.log))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A panel target of the Grafana dashboard.
struct Target {
    panel: String,
    expr: String,
}

/// Every panel target, with Grafana's variables replaced as Grafana would
/// for "all groups, all instances" over the test's time range.
fn panel_targets(range_s: u64) -> Vec<Target> {
    let path = dashboards_dir().join("grafana/mu-sidecar.json");
    let dash: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name"))
        .collect();
    for v in ["datasource", "group", "instance"] {
        assert!(
            vars.contains(&v),
            "dashboard variable {v} missing: {vars:?}"
        );
    }
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title").to_string();
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the datasource is the variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$__range", &format!("{range_s}s"))
                .replace("$group", ".*")
                .replace("$instance", ".*");
            assert!(
                !expr.contains('$'),
                "{title}: unreplaced variable in {expr}"
            );
            out.push(Target {
                panel: title.clone(),
                expr,
            });
        }
    }
    out
}

fn finite_points(series: &[Value]) -> usize {
    series
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter(|p| {
            p[1].as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        })
        .count()
}

// === traffic ===

/// Writes through every node (followers forward them), reads, refused
/// commands and new connections, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(c: &Cluster) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = c
            .nodes
            .iter()
            .map(|n| {
                let (addr, id) = (n.listen, n.id);
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        // A new connection every 50 commands.
                        let Ok(mut r) = RespClient::connect(addr) else {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        r.stream
                            .set_read_timeout(Some(Duration::from_secs(3)))
                            .expect("timeout");
                        for _ in 0..50 {
                            i += 1;
                            let key = format!("k{id}-{}", i % 1000);
                            let reply = match i % 10 {
                                0 => r.call(&["EVAL", "return 1", "0"]),
                                1..=3 => r.call(&["GET", &key]),
                                _ => r.call(&["SET", &key, &i.to_string()]),
                            };
                            match reply {
                                Ok(f) if text(&f) == "OK" => {
                                    acked.fetch_add(1, Ordering::AcqRel);
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                            if stop.load(Ordering::Acquire) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            acked,
            threads,
        }
    }

    fn wait_acked(&self, more: u64, what: &str) {
        let target = self.acked.load(Ordering::Acquire) + more;
        wait_for(Duration::from_secs(20), what, || {
            (self.acked.load(Ordering::Acquire) >= target).then_some(())
        });
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().expect("traffic thread");
        }
    }
}

fn metrics_texts(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .map(|n| match http_get(n.http, "/metrics") {
            Some((200, body)) => body,
            other => panic!("node {} /metrics: {other:?}", n.id),
        })
        .collect()
}

/// Evaluates every alert expression now; returns those with data.
fn firing(p: &mut Prometheus, rules: &BTreeMap<String, String>) -> BTreeMap<String, Vec<Value>> {
    rules
        .iter()
        .map(|(name, expr)| (name.clone(), p.query(expr)))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

#[test]
fn dashboards_and_alerts_against_a_live_group_and_prometheus() {
    let started = Instant::now();
    // A 10 ms heartbeat (detection in about 130 ms) keeps a group of six
    // processes, Prometheus and the traffic on a small shared CI machine
    // from changing leader on a descheduled process: the healthy group
    // below must not look like a flapping one.
    let c = Cluster::start(
        Kind::Redis,
        3,
        "tcp",
        &["--write-deadline-ms", "3000", "--heartbeat-us", "10000"],
    );
    let all = [0usize, 1, 2];
    let leader = c.wait_leader(&all, Duration::from_secs(10));
    let traffic = Traffic::start(&c);
    traffic.wait_acked(300, "writes through every node");

    // The sidecar's exposition, and the names dashboards/ uses.
    let exported = check_exposition(&metrics_texts(&c));
    check_dashboard_names(&exported);

    let mut p = Prometheus::start(&c);
    let up = r#"count(up{job="mu-sidecar", group="test"} == 1)"#;
    p.wait_value(up, "three sidecars scraped", |v| v == 3.0);
    // At least 8 scrapes of each, so rates over 5 s have points.
    p.wait_value(
        r#"min(count_over_time(mu_sidecar_ready{group="test"}[1m]))"#,
        "8 scrapes of every sidecar",
        |v| v >= 8.0,
    );

    // The healthy group: every alert evaluates, and none has data.
    let rules = p.alert_rules();
    let alerts = read(&dashboards_dir().join("prometheus/alerts.yml"))
        .matches("- alert:")
        .count();
    assert_eq!(rules.len(), alerts, "Prometheus loaded every alert rule");
    for name in FIRING_DURING_FAULT
        .iter()
        .chain(WINDOW_HOLDS_FAULT.iter().map(|(n, _)| n))
    {
        assert!(rules.contains_key(*name), "no alert {name}: {rules:?}");
    }
    let healthy = firing(&mut p, &rules);
    assert!(
        healthy.is_empty(),
        "alerts with data in a healthy group: {healthy:#?}\nleader changes: {:?}\n{}",
        p.query("mu_sidecar_leader_changes_total"),
        c.logs()
    );

    // One leader change: the leader sidecar stops; the others elect.
    let stopped = &c.nodes[leader];
    stopped.proc.signal("STOP");
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new = c.wait_leader(&others, Duration::from_secs(15));
    p.wait_value(
        &format!(r#"up{{job="mu-sidecar", instance="{}"}}"#, stopped.http),
        "the stopped sidecar's scrape to fail",
        |v| v == 0.0,
    );
    p.wait_value(
        r#"max(mu_sidecar_leader_changes_total{group="test"})"#,
        "a leader change in the scraped metrics",
        |v| v >= 1.0,
    );
    // Each of these alerts' expressions has data once the scrapes carry the
    // survivors' view of the stopped node (a scrape or two after `up` fell).
    for name in FIRING_DURING_FAULT {
        p.wait_value(
            &format!("count({})", rules[*name]),
            &format!("{name} to have data"),
            |v| v >= 1.0,
        );
    }
    let during = firing(&mut p, &rules);
    for name in FIRING_DURING_FAULT {
        let series = during
            .get(*name)
            .unwrap_or_else(|| panic!("{name} has no data with a sidecar stopped: {during:#?}"));
        for s in series {
            let m = &s["metric"];
            let names_stopped = m["instance"] == stopped.http.to_string();
            let names_survivor = m["node"]
                .as_str()
                .is_some_and(|n| others.iter().any(|&i| c.nodes[i].id.to_string() == n));
            assert!(
                names_stopped || names_survivor,
                "{name} names neither the stopped sidecar nor a survivor seeing it down: {s}"
            );
        }
    }
    stopped.proc.signal("CONT");
    // The lowest live id leads: the continued sidecar may take over again.
    let after = c.wait_leader(&all, Duration::from_secs(15));
    traffic.wait_acked(300, "writes after the leader change");
    p.wait_value(up, "three sidecars scraped again", |v| v == 3.0);
    p.wait_value(
        &format!(
            r#"mu_sidecar_role{{role="leader", instance="{}"}}"#,
            c.nodes[after].http
        ),
        "the leader scraped as leader",
        |v| v == 1.0,
    );
    p.wait_value(
        r#"sum(mu_sidecar_role{role="leader", group="test"})"#,
        "one leader scraped",
        |v| v == 1.0,
    );
    // A few more scrapes of the recovered group, with traffic.
    let t = unix_now();
    p.wait_value(
        &format!(
            r#"timestamp(mu_sidecar_ready{{instance="{}"}})"#,
            stopped.http
        ),
        "scrapes after recovery",
        |v| v > t + 2.0,
    );

    // Every panel query returns data over the test's time range.
    let range_s = (unix_now() - p.started).ceil() as u64 + 1;
    let targets = panel_targets(range_s);
    assert!(targets.len() >= 20, "too few panel queries");
    let mut empty = Vec::new();
    for t in &targets {
        let series = p.query_range(&t.expr);
        if finite_points(&series) == 0 {
            empty.push(format!("{}: {}\n  -> {series:?}", t.panel, t.expr));
        }
    }
    assert!(
        empty.is_empty(),
        "panel queries without data:\n{}\n{}",
        empty.join("\n"),
        c.logs()
    );
    // What the key panels show at the end.
    let expr_of = |panel: &str| {
        targets
            .iter()
            .find(|t| t.panel == panel)
            .unwrap_or_else(|| panic!("no panel {panel:?}"))
            .expr
            .clone()
    };
    let roles = p.query(&expr_of("Role per node"));
    let leaders: Vec<&Value> = roles
        .iter()
        .filter(|s| s["value"][1] == "2")
        .map(|s| &s["metric"]["node"])
        .collect();
    assert_eq!(
        leaders,
        [&Value::String(c.nodes[after].id.to_string())],
        "Role per node shows one leader, the current one: {roles:?}"
    );
    let changes = p
        .value(&expr_of("Fail-overs in range"))
        .expect("Fail-overs in range has a value");
    assert!(changes >= 1.0, "Fail-overs in range shows {changes}");

    // After recovery every alert still evaluates; those whose window no
    // longer holds the fault have no data again.
    let rules = p.alert_rules();
    let recovered = firing(&mut p, &rules);
    let unexpected: BTreeMap<&String, &Vec<Value>> = recovered
        .iter()
        .filter(|(name, _)| !WINDOW_HOLDS_FAULT.iter().any(|(n, _)| n == name))
        .collect();
    assert!(
        unexpected.is_empty(),
        "alerts with data after the group recovered: {unexpected:#?}\n{}",
        c.logs()
    );
    traffic.stop();
    eprintln!(
        "live dashboards test: {} panel queries, {} alerts, leader {} -> {}, \
         then {}, alerts with data after recovery: {:?}, {:.1} s",
        targets.len(),
        rules.len(),
        c.nodes[leader].id,
        c.nodes[new].id,
        c.nodes[after].id,
        recovered.keys().collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
}
