//! `fleetmq-loadgen`: parses the command line, runs one bounded load
//! against a loopback broker (fan-in / fan-out, or a connect storm with
//! `--mode storm`) and prints the report (a table, or one JSON line with
//! `--json`). Exits 2 if connections failed during the run.
//!
//! `fleetmq-loadgen idle --port P [--connections N] ...` instead holds N
//! idle connections open (see [`loadgen::idle`]); it exits 2 if the broker
//! closed any of them during the hold.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::idle::IdleArgs;
use loadgen::{Args, Config, Mode, StormConfig};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let mut argv = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "idle") {
        // Skip the program name; "idle" stands in for it.
        argv.next();
        let args = IdleArgs::parse_from(argv);
        let report = loadgen::idle::run_idle(args)
            .await
            .context("idle run failed")?;
        println!(
            "closed {} connections; {} lost during the hold",
            report.connected, report.lost
        );
        return Ok(if report.lost == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let args = Args::parse();
    let json = args.json;
    let (text, line, clean) = match args.mode {
        Mode::FanIn => {
            let config = Config::try_from(args)?;
            let report = loadgen::run(&config).await.context("load run failed")?;
            let clean = report.errors.is_empty();
            (report.to_string(), serde_json::to_string(&report)?, clean)
        }
        Mode::Storm => {
            let config = StormConfig::try_from(&args)?;
            let report = loadgen::storm(&config)
                .await
                .context("connect storm failed")?;
            let clean = report.failed == 0;
            (report.to_string(), serde_json::to_string(&report)?, clean)
        }
    };
    if json {
        println!("{line}");
    } else {
        print!("{text}");
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
