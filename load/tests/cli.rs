//! The binary end to end: table on stdout, `--json`, `--hgrm`, `--svg`, the `plot`
//! subcommand overlaying results, and `--fail-on-error` turning non-2xx into a failing exit.

mod common;

use common::{ok_response, run_binary, spawn_backend, status_response, Reply};

#[test]
fn run_writes_every_output_and_plot_overlays_them() {
    let backend = spawn_backend(|_| Reply::Send(ok_response()));
    let dir = std::env::temp_dir().join(format!("ringgate-load-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let target = backend.addr.to_string();
    let (code, stdout, stderr) = run_binary(&[
        "--target",
        &target,
        "--rate",
        "500",
        "--connections",
        "4",
        "--threads",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--mix",
        "commands=50,queries=50",
        "--query-form",
        "mixed",
        "--user-dist",
        "zipf:1.1",
        "--label",
        "direct",
        "--json",
        &path("run.json"),
        "--hgrm",
        &path("run.hgrm"),
        "--svg",
        &path("run.svg"),
        "--fail-on-error",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "p99.9",
        "p99.99",
        "uncorrected",
        "command",
        "query",
        "errors",
        "500 requested",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("run.json")).unwrap()).unwrap();
    assert_eq!(json["label"], "direct");
    assert_eq!(json["mode"], "open-loop");
    assert_eq!(json["rate_requested"], 500.0);
    assert_eq!(json["latency_unit"], "us");
    let sent = json["requests"]["sent"].as_u64().unwrap();
    assert!((499..=501).contains(&sent), "{sent}");
    assert_eq!(json["requests"]["errors"], 0);
    assert_eq!(json["errors"]["timeout"], 0);
    for key in [
        "p50", "p90", "p99", "p99_9", "p99_99", "max", "mean", "stdev",
    ] {
        assert!(json["latency_us"][key].as_f64().unwrap() > 0.0, "{key}");
        assert!(json["classes"]["command"]["latency_us"][key].is_number());
    }
    assert!(json["curve"].as_array().unwrap().len() > 10);

    let hgrm = std::fs::read_to_string(path("run.hgrm")).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains("#[Mean    ="));
    let svg = std::fs::read_to_string(path("run.svg")).unwrap();
    assert!(svg.contains("direct (uncorrected)"));

    let (code, stdout, stderr) = run_binary(&[
        "plot",
        "--out",
        &path("overlay.svg"),
        &format!("from-json={}", path("run.json")),
        &format!("from-hgrm={}", path("run.hgrm")),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let overlay = std::fs::read_to_string(path("overlay.svg")).unwrap();
    assert!(overlay.contains("from-json") && overlay.contains("from-hgrm"));
    assert!(overlay.matches("<polyline").count() >= 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fail_on_error_fails_on_non_2xx() {
    let backend = spawn_backend(|_| Reply::Send(status_response(500)));
    let target = backend.addr.to_string();
    let args = ["--target", &target, "-c", "1", "-n", "20", "--warmup", "0s"];
    let (code, stdout, _) = run_binary(&args);
    assert_eq!(code, 0, "without --fail-on-error the run itself succeeded");
    assert!(stdout.contains("non-2xx      500: 20"), "{stdout}");
    let mut failing = args.to_vec();
    failing.push("--fail-on-error");
    let (code, _, stderr) = run_binary(&failing);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("20 non-2xx"), "{stderr}");
}

#[test]
fn bad_arguments_exit_with_usage_errors() {
    let (code, _, stderr) = run_binary(&["--target", "127.0.0.1:1", "--mix", "writes=1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown mix class"), "{stderr}");
    let (code, _, _) = run_binary(&["--rate", "10"]);
    assert_ne!(code, 0);
}
