//! Unit tests of the configuration model: parsing, defaults and
//! validation errors by file, key and reason.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = parse(Path::new("t.toml"), "").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
}

#[test]
fn a_bad_proxy_is_an_error_naming_the_source_key() {
    let text = "[[source]]\nname = \"default\"\nproxy = \"socks5://127.0.0.1:1080\"\n\n[[source]]\nname = \"b\"\naddress = \"192.0.2.8\"\nproxy = \"socks4://127.0.0.1:1080\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e.iter().any(
            |e| e.contains("source[0].address: a source with a proxy needs the public address")
        ),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|e| e
            .starts_with("t.toml:8:9: source[1].proxy: invalid proxy \"socks4://127.0.0.1:1080\"")),
        "{e:#?}"
    );
}

#[test]
fn every_error_is_reported_with_line_key_and_reason() {
    let text = "[server]\nhostname = \"bad host\"\n\n[queue]\nsegment_sise = \"64MiB\"\nmin_free_space = \"lots\"\nflush_interval = \"5x\"\n\n[[listener]]\naddress = \"nowhere\"\n\n[nope]\n";
    let e = errors(text);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert_eq!(
        e[0],
        "t.toml:2:12: server.hostname: \"bad host\" is not a valid host name"
    );
    assert!(
        e[1].starts_with("t.toml:5:1: queue.segment_sise: unknown field `segment_sise`"),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("t.toml:6:18: queue.min_free_space: invalid size \"lots\""),
        "{}",
        e[2]
    );
    assert!(
        e[3].starts_with("t.toml:7:18: queue.flush_interval: invalid duration \"5x\""),
        "{}",
        e[3]
    );
    assert!(
        e[4].starts_with("t.toml:10:11: listener[0].address: invalid socket address"),
        "{}",
        e[4]
    );
    assert!(
        e[5].starts_with("t.toml:12:2: nope: unknown field `nope`"),
        "{}",
        e[5]
    );
}

#[test]
fn unknown_section_is_an_error() {
    let e = errors("[nope]\nx = 1\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.toml:1:2: nope: unknown field `nope`"),
        "{}",
        e[0]
    );
}

#[test]
fn syntax_errors_stop_before_semantics() {
    let e = errors("[queue\npath = \n");
    assert!(!e.is_empty());
    assert!(e[0].starts_with("t.toml:1:"), "{}", e[0]);
}

#[test]
fn array_indices_stay_right_after_earlier_removals() {
    let text = "[[listener]]\naddress = \"x\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"y\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("listener[0].address"), "{}", e[0]);
    assert!(e[1].contains("listener[2].address"), "{}", e[1]);
}

#[test]
fn semantic_checks_name_the_key() {
    let e = errors(
        "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n[queue]\nsegment_size = \"1KB\"\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0],
        "t.toml:4:11: listener[1].address: 127.0.0.1:25 is used by an earlier listener"
    );
    assert_eq!(
        e[1],
        "t.toml:6:16: queue.segment_size: 1KB is outside 64KiB..1GiB"
    );
}

#[test]
fn the_runtime_and_outcome_sync_bounds_name_their_keys() {
    let e = errors("[server]\nworker_threads = 5000\n[queue]\noutcome_sync_delay = \"1m\"\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("t.toml:2:18: server.worker_threads: 5000 is above the most, 1024"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("t.toml:4:22: queue.outcome_sync_delay: 1m is above the most, 10s"),
        "{e:#?}"
    );
    let c = parse(Path::new("t.toml"), "[server]\nworker_threads = 3\n").unwrap();
    assert_eq!(c.server.runtime_threads(), 3);
    let auto = Config::default().server.runtime_threads();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        auto,
        cores.saturating_sub(1).max(1),
        "cores less one, at least one"
    );
}

#[test]
fn wrong_types_are_reported() {
    let e = errors("[queue]\nsegment_size = 5\ndurability = \"sometimes\"\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("queue.segment_size"), "{}", e[0]);
    assert!(
        e[1].contains("queue.durability") && e[1].contains("sometimes"),
        "{}",
        e[1]
    );
}

#[test]
fn the_shipped_file_shows_the_built_in_defaults() {
    // Every key in config/tern.toml is documented with its default
    // value: the file and the code must not drift apart.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
    let mut file = load(&path).unwrap_or_else(|e| panic!("{e}"));
    // Except the provider presets it includes (built in: none).
    assert_eq!(
        file.shaping.include.as_deref(),
        Some(Path::new("shaping.toml"))
    );
    assert!(file.shaping.providers.len() >= 8);
    file.shaping = ShapingConfig::default();
    file.file = None;
    assert_eq!(file, Config::default());
}

#[test]
fn every_key_is_documented_in_the_shipped_file() {
    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            match v {
                toml::Value::Table(t) => keys(k, t, out),
                toml::Value::Array(a) => {
                    for t in a.iter().filter_map(toml::Value::as_table) {
                        keys(k, t, out);
                    }
                }
                _ => out.push(format!("{prefix}.{k}")),
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
    let text = std::fs::read_to_string(path).unwrap();
    // The defaults, plus one of each list entry with every optional key set.
    let mut c = Config::default();
    let some = || Some("x".to_owned());
    c.routes.push(RouteConfig {
        domain: "d".into(),
        smarthost: vec!["h".into()],
        mx: vec!["m".into()],
        tls: Some(TlsPolicy::Required),
    });
    c.tenants.push(TenantConfig {
        name: "t".into(),
        pool: some(),
        domains: vec!["shop.example".into()],
        ..TenantConfig::default()
    });
    c.sources[0].address = Some([192, 0, 2, 1].into());
    c.sources[0].ehlo = some();
    (c.listeners[0].pool, c.listeners[0].tenant) = (some(), some());
    c.delivery.pool_header = some();
    c.cluster = Some(ClusterConfig {
        node: some(),
        advertise: Some(([127, 0, 0, 1], 8025).into()),
        token: some(),
        ..ClusterConfig::default()
    });
    c.sources[0].shared = Some(true);
    c.events.bounce_rules = Some("config/bounces.toml".into());
    c.api.address = Some(([127, 0, 0, 1], 8026).into());
    c.admin.tls_certificate = Some("admin.crt".into());
    c.admin.read_token = some();
    c.admin.tls_key = Some("admin.key".into());
    c.api.token = some();
    c.tls_policy.report_from = Some("a@b.example".into());
    c.dns.trust_anchor = Some("anchors.txt".into());
    c.tls_policy.report_organization = some();
    c.tls_policy.report_contact = some();
    c.events.webhook.push(WebhookConfig {
        name: "w".into(),
        url: "http://127.0.0.1:1/".into(),
        secret: some(),
        events: vec!["delivery".into()],
        ..WebhookConfig::default()
    });
    c.sources[0].proxy = Some("socks5://127.0.0.1:1080".parse().unwrap());
    c.auth.users.push(UserConfig {
        priority: None,
        name: "u".into(),
        password_hash: "h".into(),
        pool: some(),
        tenant: some(),
        domains: vec!["news.shop.example".into()],
    });
    let model: toml::Table = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    let mut all = Vec::new();
    keys("", &model, &mut all);
    // A key counts as documented where `name =` appears as a whole word
    // (set or commented out, on its own line or in an inline table).
    let documented = |name: &str| {
        let needle = format!("{name} =");
        text.match_indices(&needle).any(|(i, _)| {
            i == 0
                || !(text.as_bytes()[i - 1].is_ascii_alphanumeric()
                    || text.as_bytes()[i - 1] == b'_')
        })
    };
    for key in all {
        let name = key.rsplit('.').next().unwrap();
        assert!(
            documented(name),
            "{key} is not documented in {DEFAULT_PATH}"
        );
    }
}

#[test]
fn the_shipped_default_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
    assert!(c.queue.path.is_relative());
}

#[test]
fn the_demo_config_is_valid_and_routes_to_the_sink() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.routes[0].smarthost, ["127.0.0.1:2526"]);
}

#[test]
fn a_config_round_trips_through_toml() {
    let c = Config::default();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(parse(Path::new("t.toml"), &text).unwrap(), c);
}

#[test]
fn a_node_name_is_a_host_names_characters() {
    let cluster =
        |node: &str| format!("[cluster]\nredis = \"redis://127.0.0.1:1\"\nnode = {node:?}\n");
    assert_eq!(errors(&cluster("mta-17.eu_west")), Vec::<String>::new());
    for bad in ["mta\"17", "mta*", "a b", ""] {
        let e = errors(&cluster(bad));
        assert!(
            e.iter()
                .any(|e| e.contains("cluster.node") && e.contains("letters, digits")),
            "{bad:?}: {e:?}"
        );
    }
}
