//! The fleetmq vs Mosquitto benchmark (`services/loadgen/bench.sh`) run
//! once at tiny sizes against the binaries of this build, so the tool keeps
//! working: every scenario row is in the table with numbers, and the tiny
//! fan-in loses nothing. Speed is never asserted (that is what the full run
//! in services/loadgen/PERFORMANCE.md is for); the machine is shared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use fleetmq_tests::fleetmq_bin;

#[test]
fn tiny_bench_prints_every_scenario_for_both_brokers() {
    let fleetmq = fleetmq_bin();
    let loadgen = fleetmq.with_file_name("fleetmq-loadgen");
    assert!(
        loadgen.exists(),
        "{} is missing: build it with `cargo build -p loadgen` (nextest --workspace does)",
        loadgen.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let json_out = dir.path().join("bench.json");
    let out = Command::new(root.join("services/loadgen/bench.sh"))
        .args(["--size", "tiny", "--runs", "1", "--no-build"])
        .arg("--fleetmq-bin")
        .arg(&fleetmq)
        .arg("--loadgen-bin")
        .arg(&loadgen)
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench.sh failed:\n{stdout}\n{stderr}");

    // Every measured row, for both brokers: scenario, broker, then rate,
    // losses, the broker's and the load generator's CPU per operation and
    // p99 as numbers.
    let rows: Vec<&str> = stdout.lines().collect();
    for scenario in [
        "fan-in 5x40x64B qos0",
        "fan-in 5x40x64B qos1",
        "fan-out 1->10 x20 qos0",
        "fan-out 1->10 x20 qos1",
        "connect 20 c5",
        "tls-connect 20 c5",
    ] {
        for broker in ["fleetmq", "mosquitto"] {
            let row = rows
                .iter()
                .find(|l| {
                    l.starts_with(scenario) && l[scenario.len()..].trim_start().starts_with(broker)
                })
                .unwrap_or_else(|| panic!("no row {scenario} {broker} in:\n{stdout}"));
            let cells: Vec<&str> = row[scenario.len()..].split_whitespace().collect();
            for (name, cell) in ["rate", "lost", "cpu", "gen", "p99"]
                .iter()
                .zip(&cells[1..6])
            {
                assert!(
                    cell.parse::<f64>().is_ok(),
                    "{scenario} {broker}: {name} is {cell:?} in {row:?}"
                );
            }
            if scenario.starts_with("fan-in") {
                assert_eq!(
                    cells[2], "0",
                    "tiny fan-in lost messages: {row:?}\n{stderr}"
                );
            }
        }
    }
    // The ratio column is there for each measured scenario.
    let ratios = rows
        .iter()
        .filter(|l| l.contains(" fleetmq ") && !l.contains("memory "))
        .filter(|l| l.split_whitespace().last().unwrap().parse::<f64>().is_ok())
        .count();
    assert_eq!(ratios, 6, "{stdout}");
    // Memory per connection: a figure when conn-memory.sh is in the tree,
    // n/a when it is not, never a missing row.
    let hook = root.join("services/loadgen/conn-memory.sh").exists();
    for broker in ["fleetmq", "mosquitto"] {
        let row = rows
            .iter()
            .find(|l| l.starts_with("memory 50 idle conns") && l.contains(broker))
            .unwrap_or_else(|| panic!("no memory row for {broker} in:\n{stdout}"));
        assert_eq!(!row.contains("n/a"), hook, "{row:?}\n{stderr}");
        // Over TLS, a client certificate each: measured by bench.py itself.
        let row = rows
            .iter()
            .find(|l| l.starts_with("tls-memory 50 idle conns") && l.contains(broker))
            .unwrap_or_else(|| panic!("no tls-memory row for {broker} in:\n{stdout}"));
        assert!(row.contains("KiB"), "{row:?}\n{stderr}");
    }
    // The JSON has one report per row and broker, from the real runs.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "{json}");
    for r in results {
        let report = &r["runs"][0]["report"];
        assert!(
            report["broker"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{r}"
        );
    }
}

/// The cluster benchmark (`services/loadgen/cluster-bench.sh`) at tiny
/// sizes through 1, 2 and 3 nodes of this build: every row is printed with
/// numbers and nothing is lost. Needs Postgres (skipped, saying so,
/// without one).
#[test]
fn tiny_cluster_bench_prints_every_row_for_each_cluster_size() {
    let Some(admin_url) = store::testing::postgres_admin_url() else {
        eprintln!("tiny cluster bench: skipped (no Postgres configured)");
        return;
    };
    let fleetmq = fleetmq_bin();
    let loadgen = fleetmq.with_file_name("fleetmq-loadgen");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("services/loadgen/cluster-bench.sh"))
        .args(["--size", "tiny", "--no-build", "--database-url", &admin_url])
        .arg("--fleetmq-bin")
        .arg(&fleetmq)
        .arg("--loadgen-bin")
        .arg(&loadgen)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cluster-bench.sh failed:\n{stdout}\n{stderr}"
    );
    let mut rows = 0;
    for (scenario, sizes) in [
        ("fan-in 5x40 qos0", &[1, 2, 3][..]),
        ("fan-in 5x40 qos1", &[1, 2, 3]),
        ("fan-out 1->10 x20 qos0", &[1, 2, 3]),
        ("fan-out 1->10 x20 qos1", &[1, 2, 3]),
        ("remote fan-in 5x40 qos0", &[2, 3]),
        ("remote fan-in 5x40 qos1", &[2, 3]),
    ] {
        for n in sizes {
            let row = stdout
                .lines()
                .find(|l| {
                    l.strip_prefix(scenario)
                        .and_then(|rest| rest.split_whitespace().next())
                        == Some(&n.to_string())
                })
                .unwrap_or_else(|| panic!("no row {scenario} on {n} nodes in:\n{stdout}"));
            let cells: Vec<&str> = row[scenario.len()..].split_whitespace().collect();
            assert_eq!(cells[2], "0", "lost messages: {row:?}\n{stderr}");
            // Rate, lost, CPU of the nodes and of NATS per message; per-node
            // efficiency is n/a when a tiny run spent less than a clock tick.
            for cell in &cells[1..5] {
                assert!(cell.parse::<f64>().is_ok(), "{cell:?} in {row:?}");
            }
            assert!(
                cells[5] == "n/a" || cells[5].parse::<f64>().is_ok(),
                "{row:?}"
            );
            rows += 1;
        }
    }
    assert_eq!(rows, 16);
}
