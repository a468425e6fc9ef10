//! Refused config files name the file, the line and the dotted key, for type errors as
//! well as validation errors; the same message comes out of `ringgate --check`.

use std::path::PathBuf;

use ringgate::config::{Config, ConfigError, DefaultRoute};

/// A config file in the temp dir, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let path = std::env::temp_dir().join(format!(
            "ringgate-config-errors-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Load `text` from a file and return the refusal, checking that its message starts with
/// `<file>:<line>: key `<key>`: `.
fn refused(name: &str, text: &str, line: usize, key: &str) -> ConfigError {
    let file = TempConfig::new(name, text);
    let e = Config::load(&file.0).expect_err("config must be refused");
    let prefix = format!("{}:{line}: key `{key}`: ", file.0.display());
    assert!(
        e.to_string().starts_with(&prefix),
        "{e}\nexpected prefix {prefix}"
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)));
    e
}

/// Load `text` from a file; it must be accepted.
fn accepted(name: &str, text: &str) -> Config {
    let file = TempConfig::new(name, text);
    Config::load(&file.0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `[section] key = value` after the two zones (on line 6) must be refused at that key.
fn refused_value(section: &str, key: &str, value: &str) -> ConfigError {
    refused(
        &format!("{section}_{key}_{value}"),
        &format!("{ZONES}[{section}]\n{key} = {value}\n"),
        6,
        &format!("{section}.{key}"),
    )
}

const ZONES: &str = "[partitions.zone_1]\nservers = [\"127.0.0.1:3001\"]\n[partitions.zone_2]\nservers = [\"127.0.0.1:3002\"]\n";

#[test]
fn a_type_error_names_the_key() {
    let text = format!("{ZONES}[workers]\ncount = \"two\"\n");
    let e = refused("wrong_type", &text, 6, "workers.count");
    assert!(e.message.contains("invalid type: string \"two\""), "{e}");

    let e = refused(
        "unknown_key",
        &format!("{ZONES}[partitions.zone_3]\nservers = [\"127.0.0.1:1\"]\nweight = 2\n"),
        7,
        "partitions.zone_3.weight",
    );
    assert!(e.message.contains("unknown field `weight`"), "{e}");

    refused(
        "array_item",
        &format!("{ZONES}[workers]\ncpus = [0, \"one\"]\n"),
        6,
        "workers.cpus",
    );
}

#[test]
fn more_user_id_header_names_than_trailers_can_refuse_are_refused() {
    // ZONES is four lines; [extract] is line 5, the list on line 6 names nine headers.
    let names: Vec<String> = (1..=9).map(|i| format!("\"X-Id-{i}\"")).collect();
    let text = format!("{ZONES}[extract]\nheaders = [{}]\n", names.join(", "));
    let e = refused("nine_headers", &text, 6, "extract.headers");
    assert!(e.message.contains("at most 8 user id header names"), "{e}");
    // Eight load.
    let text = format!("{ZONES}[extract]\nheaders = [{}]\n", names[..8].join(", "));
    let ok = TempConfig::new("eight_headers", &text);
    Config::load(&ok.0).unwrap();
}

/// JSON keys match in any case, as Go's `encoding/json` reads them; the scanner folds the
/// case of ASCII only, so a key beyond ASCII (`"clé"`, which Go also matches as `"CLÉ"`)
/// would let the two disagree.
#[test]
fn a_json_key_beyond_ascii_is_refused() {
    let text = format!("{ZONES}[extract]\njson_keys = [\"user_id\", \"cl\u{e9}\"]\n");
    let e = refused("json_key_not_ascii", &text, 6, "extract.json_keys");
    assert!(e.message.contains("is not ASCII"), "{e}");
    accepted(
        "json_keys_ascii",
        &format!("{ZONES}[extract]\njson_keys = [\"user_id\", \"cle\"]\n"),
    );
}

#[test]
fn a_misspelt_default_partition_is_called_unknown() {
    let text = format!("default_backend = \"zone_7\"\n{ZONES}");
    let e = refused("misspelt_default", &text, 1, "default_backend");
    assert!(
        e.message
            .starts_with("unknown partition \"zone_7\" (partitions: zone_1, zone_2)"),
        "{e}"
    );
    // An address that does not resolve is still reported as an address.
    let e = refused(
        "bad_address",
        &format!("default_backend = \"no-such-host.invalid:80\"\n{ZONES}"),
        1,
        "default_backend",
    );
    assert!(e.message.contains("host:port"), "{e}");
}

#[test]
fn a_partition_named_default_beside_an_implicit_one_is_refused() {
    let text = format!(
        "default_backend = \"127.0.0.1:3009\"\n{ZONES}[partitions.default]\nservers = [\"127.0.0.1:3003\"]\n"
    );
    let e = refused("two_defaults", &text, 6, "partitions.default");
    assert!(e.message.contains("reserved"), "{e}");

    // Naming it as the default route is fine: there is then no implicit partition.
    let ok = TempConfig::new(
        "named_default",
        &format!("default_backend = \"default\"\n{ZONES}[partitions.default]\nservers = [\"127.0.0.1:3003\"]\n"),
    );
    let c = Config::load(&ok.0).unwrap();
    let names: Vec<&str> = c
        .routes
        .partitions
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["default", "zone_1", "zone_2"]);
    assert_eq!(c.routes.default, DefaultRoute::Partition(0));
}

#[test]
fn user_ids_must_be_ones_a_request_can_carry() {
    let e = refused(
        "empty_user",
        &format!("{ZONES}[users]\nalice = \"zone_1\"\n\"\" = \"zone_1\"\n"),
        7,
        "users.\"\"",
    );
    assert!(e.message.contains("empty user id"), "{e}");

    let long = "u".repeat(33);
    let e = refused(
        "long_user",
        &format!("{ZONES}[limits]\nmax_user_id_bytes = 32\n[users]\n{long} = \"zone_1\"\n"),
        8,
        &format!("users.{long}"),
    );
    assert!(e.message.contains("33 bytes"), "{e}");
    // At the limit it is fine.
    let ok = TempConfig::new(
        "user_at_limit",
        &format!("{ZONES}[limits]\nmax_user_id_bytes = 33\n[users]\n{long} = \"zone_1\"\n"),
    );
    assert_eq!(Config::load(&ok.0).unwrap().routes.users.len(), 1);
}

#[test]
fn the_binary_prints_the_same_message() {
    let file = TempConfig::new("binary", &format!("{ZONES}[workers]\ncount = \"two\"\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["--check", "--config", file.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6: key `workers.count`: invalid type",
            file.0.display()
        )),
        "{stderr}"
    );
}

fn check_binary(file: &TempConfig) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["--check", "--config", file.0.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn check_tries_the_access_log() {
    // `--check` used to say "config OK" for a log the start then could not open.
    let missing = format!("/nonexistent-ringgate-{}/access.log", std::process::id());
    let file = TempConfig::new(
        "log_missing_dir",
        &format!("{ZONES}[log]\naccess_log = \"{missing}\"\n"),
    );
    let out = check_binary(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("access log {missing}: ")),
        "{stderr}"
    );
    // A writable directory passes, and the check creates nothing there.
    let dir = std::env::temp_dir().join(format!("ringgate-check-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let file = TempConfig::new(
        "log_ok",
        &format!("{ZONES}[log]\naccess_log = \"{}\"\n", log.display()),
    );
    let out = check_binary(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.exists(), "--check created the access log");
    // An existing file is opened as it is, not truncated.
    std::fs::write(&log, b"kept\n").unwrap();
    assert!(check_binary(&file).status.success());
    assert_eq!(std::fs::read(&log).unwrap(), b"kept\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_runtime_keys_are_validated() {
    let e = refused(
        "trusted_proxies",
        &format!("{ZONES}[forward]\ntrusted_proxies = [\"10.0.0.0/8\",\n  \"10.0.0.300\"]\n"),
        7,
        "forward.trusted_proxies",
    );
    assert!(
        e.message.contains("not an IP address or a CIDR block"),
        "{e}"
    );
    let e = refused(
        "ring",
        &format!("{ZONES}[workers]\nring = \"turbo\"\n"),
        6,
        "workers.ring",
    );
    assert!(e.message.contains("defer_taskrun"), "{e}");
}

#[test]
fn a_tls_certificate_that_cannot_be_used_is_refused_with_file_and_reason() {
    let dir =
        std::env::temp_dir().join(format!("ringgate-config-errors-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    ringgate::tls::write_self_signed(&cert, &key).unwrap();
    let (other_cert, other_key) = (dir.join("other.pem"), dir.join("other-key.pem"));
    ringgate::tls::write_self_signed(&other_cert, &other_key).unwrap();
    let text = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "{ZONES}[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        )
    };
    // A key that is not the certificate's.
    let e = refused("tls_mismatch", &text(&cert, &other_key), 6, "listener.tls");
    assert!(e.message.contains("does not match the certificate"), "{e}");
    // A missing key file.
    let e = refused(
        "tls_missing",
        &text(&cert, &dir.join("nope.pem")),
        6,
        "listener.tls",
    );
    assert!(e.message.contains("nope.pem"), "{e}");
    // The right pair loads.
    let good = TempConfig::new("tls_good", &text(&cert, &key));
    assert!(Config::load(&good.0).unwrap().listener_tls.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zero_timeouts_are_refused_not_turned_into_one_millisecond() {
    for (section, key) in [
        ("timeouts", "client_header_ms"),
        ("timeouts", "client_idle_ms"),
        ("timeouts", "client_body_ms"),
        ("timeouts", "upstream_connect_ms"),
        ("timeouts", "upstream_response_ms"),
        ("timeouts", "tunnel_idle_ms"),
        ("timeouts", "tls_handshake_ms"),
        ("pool", "idle_timeout_ms"),
        ("circuit", "cooldown_ms"),
    ] {
        let e = refused_value(section, key, "0");
        assert!(e.message.contains("at least 1"), "{e}");
    }
    // `request_deadline_ms = 0` means no deadline, and stays allowed.
    accepted(
        "no_deadline",
        &format!("{ZONES}[timeouts]\nrequest_deadline_ms = 0\n"),
    );
}

#[test]
fn a_health_path_must_be_a_path() {
    for (name, path) in [
        ("relative", "health"),
        ("space", "/h HTTP/1.1"),
        ("crlf", "/h\\r\\nX-Injected: 1"),
        ("non_ascii", "/santé"),
    ] {
        let e = refused(
            &format!("health_path_{name}"),
            &format!("{ZONES}[health]\nhttp_path = \"{path}\"\n"),
            6,
            "health.http_path",
        );
        assert!(e.message.contains("must start with /"), "{e}");
    }
    accepted(
        "health_path_ok",
        &format!("{ZONES}[health]\nhttp_path = \"/healthz?full=1\"\n"),
    );
}

#[test]
fn only_http_1_can_be_offered_by_alpn() {
    let dir = std::env::temp_dir().join(format!(
        "ringgate-config-errors-alpn-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    ringgate::tls::write_self_signed(&cert, &key).unwrap();
    let text = |alpn: &str| {
        format!(
            "{ZONES}[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\nalpn = {alpn}\n",
            cert.display(),
            key.display()
        )
    };
    // A client offered h2 would speak HTTP/2, which ringgate does not.
    let e = refused(
        "alpn_h2",
        &text("[\"h2\", \"http/1.1\"]"),
        8,
        "listener.tls.alpn",
    );
    assert!(e.message.contains("\"h2\" cannot be offered"), "{e}");
    accepted("alpn_ok", &text("[\"http/1.1\", \"http/1.0\"]"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_servers_at_different_addresses_need_sni() {
    // Without `sni` the certificate is checked against an IP address, one per partition:
    // a second server's would be checked against the first one's.
    let text = "[partitions.z]\nservers = [\"127.0.0.1:3001\", \"127.0.0.2:3001\"]\ntls = true\n";
    let e = refused("tls_two_ips", text, 1, "partitions.z.sni");
    assert!(e.message.contains("need `sni`"), "{e}");
    for ok in [
        "[partitions.z]\nservers = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\ntls = true\n",
        "[partitions.z]\nservers = [\"127.0.0.1:3001\", \"127.0.0.2:3001\"]\ntls = true\nsni = \"localhost\"\n",
    ] {
        accepted("tls_sni_ok", ok);
    }
}

#[test]
fn a_backoff_cap_below_its_base_is_refused() {
    let e = refused(
        "backoff_inverted",
        &format!("{ZONES}[retry]\nbackoff_base_ms = 100\nbackoff_max_ms = 10\n"),
        7,
        "retry.backoff_max_ms",
    );
    assert!(e.message.contains("below retry.backoff_base_ms"), "{e}");
}

#[test]
fn a_user_placed_in_a_shadow_partition_is_told_so() {
    let text = "[partitions.z]\nservers = [\"127.0.0.1:3001\"]\nmirror = \"s\"\n[partitions.s]\nservers = [\"127.0.0.1:3002\"]\n[users]\nalice = \"s\"\n";
    let e = refused("user_in_shadow", text, 7, "users.alice");
    assert!(e.message.contains("is a mirror's shadow"), "{e}");
}

#[test]
fn server_lists_hold_servers_one_can_reach_and_at_most_64() {
    for (name, addr) in [("port_zero", "127.0.0.1:0"), ("unspecified", "0.0.0.0:80")] {
        let e = refused(
            name,
            &format!("[partitions.z]\nservers = [\"{addr}\"]\n"),
            2,
            "partitions.z.servers",
        );
        assert!(e.message.contains("no server one can connect to"), "{e}");
    }
    // Only the first 64 of a longer list would ever be tried.
    let list = |n: u16| {
        (1..=n)
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let e = refused(
        "sixty_five",
        &format!("[partitions.z]\nservers = [{}]\n", list(65)),
        2,
        "partitions.z.servers",
    );
    assert!(e.message.contains("more than 64 servers"), "{e}");
    accepted(
        "sixty_four",
        &format!("[partitions.z]\nservers = [{}]\n", list(64)),
    );
}

#[test]
fn numbers_out_of_range_are_refused_not_clamped() {
    // NaN passed every clamp: a NaN retry budget never ran out, a NaN shed ratio shed
    // Queries at one in flight.
    for (section, key, value) in [
        ("retry", "budget_ratio", "nan"),
        ("retry", "budget_ratio", "1.5"),
        ("retry", "budget_reserve", "-1.0"),
        ("overload", "query_shed_ratio", "nan"),
        ("overload", "query_shed_ratio", "-0.1"),
        ("health", "interval_ms", "0"),
        ("health", "timeout_ms", "0"),
        ("health", "fall", "0"),
        ("health", "rise", "0"),
        ("circuit", "consecutive_failures", "0"),
        ("retry", "max_attempts", "1000"),
        ("listener", "backlog", "-5"),
        ("listener", "max_connections_per_worker", "0"),
        ("workers", "ring_entries", "128"),
    ] {
        let e = refused_value(section, key, value);
        assert!(
            e.message.contains("out of range") || e.message.contains("at least 1"),
            "{e}"
        );
    }
}

/// A Query shed ratio of 0 cannot mean what it says: every Query shed, yet the Query bound
/// is at least one place, so a Query was admitted whenever nothing was in flight.
#[test]
fn a_query_shed_ratio_of_0_is_refused() {
    for value in ["0", "0.0", "-0.0"] {
        let e = refused_value("overload", "query_shed_ratio", value);
        assert!(e.message.contains("would shed every Query"), "{e}");
    }
    accepted(
        "query_shed_ratio_small",
        &format!("{ZONES}[overload]\nquery_shed_ratio = 0.01\n"),
    );
}

#[test]
fn settings_of_what_is_off_are_checked_too() {
    // Turning the access log or the health checks on by a reload must not be the first
    // time their settings are read.
    refused(
        "log_format_off",
        &format!("{ZONES}[log]\naccess_log_format = \"xml\"\n"),
        6,
        "log.access_log_format",
    );
    refused(
        "health_off",
        &format!("{ZONES}[health]\nenabled = false\nfall = 0\n"),
        7,
        "health.fall",
    );
    // The circuit breaker's were not read while it was off.
    refused(
        "circuit_off_cooldown",
        &format!("{ZONES}[circuit]\nenabled = false\ncooldown_ms = 0\n"),
        7,
        "circuit.cooldown_ms",
    );
    refused(
        "circuit_off_failures",
        &format!("{ZONES}[circuit]\nenabled = false\nconsecutive_failures = 0\n"),
        7,
        "circuit.consecutive_failures",
    );
}

#[test]
fn pinning_to_a_cpu_this_process_cannot_use_is_refused() {
    // It used to start and log a warning per worker, running unpinned.
    let e = refused_value("workers", "cpus", "[0, 4096]");
    assert!(
        e.message
            .contains("CPU 4096 is not one this process may run on"),
        "{e}"
    );
    accepted("cpus_zero", &format!("{ZONES}[workers]\ncpus = [0]\n"));
}

#[test]
fn a_config_that_could_not_start_is_refused() {
    // Both passed `--check` and failed only at start.
    let e = refused_value("workers", "count", "100000");
    assert!(e.message.contains("out of range"), "{e}");
    let e = refused(
        "admin_on_listener",
        &format!(
            "{ZONES}[listener]\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"0.0.0.0:8080\"\n"
        ),
        8,
        "admin.address",
    );
    assert!(e.message.contains("need different ports"), "{e}");
    accepted(
        "admin_beside_listener",
        &format!("{ZONES}[listener]\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"127.0.0.1:9901\"\n"),
    );
}

#[test]
fn an_access_log_queue_out_of_range_is_refused() {
    // Both passed `--check`: the huge one then failed the start with a "capacity overflow"
    // panic (or took the memory of a billion slots), and 0 quietly became 16.
    for value in ["9223372036854775807", "1000000000", "0", "15"] {
        let e = refused_value("log", "access_log_queue_lines", value);
        assert!(e.message.contains("out of range"), "{e}");
    }
    accepted(
        "queue_lines_small",
        &format!("{ZONES}[log]\naccess_log_queue_lines = 16\n"),
    );
}

#[test]
fn a_default_backend_address_must_be_a_server_one_can_reach() {
    // Server lists refused these; as `default_backend` they made a partition whose one
    // server nobody can connect to.
    for addr in ["127.0.0.1:0", "0.0.0.0:3001", "[::]:3001"] {
        let e = refused(
            &format!("default_{}", addr.replace([':', '[', ']', '.'], "_")),
            &format!("default_backend = \"{addr}\"\n{ZONES}"),
            1,
            "default_backend",
        );
        assert!(e.message.contains("no server one can connect to"), "{e}");
    }
}

#[test]
fn a_duplicate_key_or_table_names_the_key() {
    // A user listed twice in a long `[users]` table is the usual case; the message named
    // the line only.
    let e = refused(
        "duplicate_user",
        &format!("{ZONES}[users]\nalice = \"zone_1\"\nbob = \"zone_1\"\nalice = \"zone_2\"\n"),
        8,
        "users.alice",
    );
    assert!(e.message.contains("duplicate key"), "{e}");
    refused(
        "duplicate_quoted_user",
        &format!("{ZONES}[users]\n\"a b\" = \"zone_1\"\n'a b' = \"zone_2\"\n"),
        7,
        "users.\"a b\"",
    );
    refused(
        "duplicate_table",
        &format!("{ZONES}[partitions.zone_1]\nservers = [\"127.0.0.1:3003\"]\n"),
        5,
        "partitions.zone_1",
    );
    refused(
        "duplicate_in_inline_table",
        &format!("{ZONES}[rate_limit.users]\nalice = {{ commands = 1, commands = 2 }}\n"),
        6,
        "rate_limit.users.alice.commands",
    );
    refused(
        "duplicate_dotted",
        &format!(
            "{ZONES}[partitions]\nzone_3.servers = [\"127.0.0.1:3003\"]\nzone_3.servers = []\n"
        ),
        7,
        "partitions.zone_3.servers",
    );
}

#[test]
fn a_default_backend_written_under_users_is_refused() {
    // Appended at the end of the seed's file it lands in `[users]`: it was taken as a user
    // called "default_backend", and requests without a user id were refused (400).
    let e = refused(
        "default_under_users",
        &format!("{ZONES}[users]\nalice = \"zone_1\"\ndefault_backend = \"zone_2\"\n"),
        7,
        "users.default_backend",
    );
    assert!(e.message.contains("top-level key"), "{e}");
}

#[test]
fn settings_that_would_silently_do_nothing_are_refused() {
    // Two workers on one core take turns on it: never what pinning is asked for.
    let e = refused_value("workers", "cpus", "[0, 0]");
    assert!(e.message.contains("CPU 0 is listed twice"), "{e}");
    // 0 mirrors in flight turned every configured mirror off, without a word.
    refused_value("mirror", "max_in_flight_per_worker", "0");
    accepted(
        "mirror_one",
        &format!("{ZONES}[mirror]\nmax_in_flight_per_worker = 1\n"),
    );
    // An empty or spaced protocol name can never match an `Upgrade` field.
    for (i, bad) in ["[\"\"]", "[\"web socket\"]", "[\"websocket/\"]"]
        .iter()
        .enumerate()
    {
        let e = refused(
            &format!("upgrade_{i}"),
            &format!("{ZONES}[forward]\nupgrade_protocols = {bad}\n"),
            6,
            "forward.upgrade_protocols",
        );
        assert!(e.message.contains("is not a protocol name"), "{e}");
    }
    accepted(
        "upgrade_versioned",
        &format!("{ZONES}[forward]\nupgrade_protocols = [\"websocket\", \"h2c\", \"foo/1.1\"]\n"),
    );
}

/// `forward.trusted_body_methods`: only methods a body may sensibly ride on, spelled as
/// the request line spells them.
#[test]
fn trusted_body_methods_are_checked() {
    for (i, bad) in [
        "[\"delete\"]",
        "[\"TRACE\"]",
        "[\"HEAD\"]",
        "[\"CONNECT\"]",
        "[\"PURGE\"]",
    ]
    .iter()
    .enumerate()
    {
        let e = refused(
            &format!("body_methods_{i}"),
            &format!("{ZONES}[forward]\ntrusted_body_methods = {bad}\n"),
            6,
            "forward.trusted_body_methods",
        );
        assert!(e.message.contains("is not one of"), "{e}");
    }
    let c = accepted(
        "body_methods",
        &format!("{ZONES}[forward]\ntrusted_body_methods = [\"DELETE\", \"GET\", \"POST\"]\n"),
    );
    use ringgate::http::parse::Method;
    let s = &c.settings;
    for (m, pooled) in [
        (Method::Delete, true),
        (Method::Get, true),
        (Method::Post, true),
        (Method::Patch, true),
        (Method::Options, false),
        (Method::Other, false),
    ] {
        assert_eq!(s.pools_after_body(m), pooled, "{m:?}");
    }
    let d = &accepted("body_methods_default", ZONES).settings;
    assert!(!d.pools_after_body(Method::Delete) && d.pools_after_body(Method::Put));
}

/// `pool.max_connections_per_backend`: 0 (the default) is no bound; a negative or
/// absurd bound is refused at its line and key.
#[test]
fn the_per_backend_connection_bound_is_checked() {
    let e = refused_value("pool", "max_connections_per_backend", "-1");
    assert!(e.message.contains("invalid value"), "{e}");
    let e = refused_value("pool", "max_connections_per_backend", "2000000");
    assert!(e.message.contains("out of range 0..=1048576"), "{e}");
    let e = refused_value("pool", "max_connections_per_backend", "\"2\"");
    assert!(e.message.contains("invalid type"), "{e}");
    let c = accepted("max_conns_default", ZONES);
    assert_eq!(c.settings.pool_max_connections_per_backend, 0);
    let c = accepted(
        "max_conns_2",
        &format!("{ZONES}[pool]\nmax_connections_per_backend = 2\n"),
    );
    assert_eq!(c.settings.pool_max_connections_per_backend, 2);
}

#[test]
fn a_backoff_beyond_a_minute_is_refused() {
    // It held a retried Query's in-flight place for as long as it said (days, say).
    let e = refused_value("retry", "backoff_max_ms", "86400000");
    assert!(e.message.contains("out of range 0..=60000"), "{e}");
    accepted(
        "backoff_minute",
        &format!("{ZONES}[retry]\nbackoff_max_ms = 60000\n"),
    );
}
