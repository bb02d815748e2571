//! `fleetmq-loadgen`: parses the command line, runs one bounded fan-in load
//! against a loopback broker and prints the report (a table, or one JSON
//! line with `--json`). Exits 2 if connections failed during the run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let json = args.json;
    let config = Config::try_from(args)?;
    let report = loadgen::run(&config).await.context("load run failed")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
