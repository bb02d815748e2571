//! The MQTT password checks' bounds (`--password-check-concurrency` …),
//! resolved into an [`access::PasswordCheckLimits`] whose defaults are the
//! `access` crate's own.

use super::{FileConfig, Setting, number_in};
use crate::cli::PasswordCheckArgs;
use crate::error::Error;

setting!(
    CONCURRENCY,
    "--password-check-concurrency",
    "FLEETMQ_PASSWORD_CHECK_CONCURRENCY",
    "password_check_concurrency"
);
setting!(
    QUEUE,
    "--password-check-queue",
    "FLEETMQ_PASSWORD_CHECK_QUEUE",
    "password_check_queue"
);
setting!(
    FAILURES_PER_ADDRESS,
    "--password-failures-per-address",
    "FLEETMQ_PASSWORD_FAILURES_PER_ADDRESS",
    "password_failures_per_address"
);

pub(super) fn resolve(
    args: &PasswordCheckArgs,
    file: &FileConfig,
) -> Result<access::PasswordCheckLimits, Error> {
    let default = access::PasswordCheckLimits::default();
    let concurrency = number_in(
        CONCURRENCY,
        args.password_check_concurrency
            .or(file.password_check_concurrency),
        default.concurrency,
        1..=1024,
        "expected 1 to 1024 checks at once",
    )?;
    let max_waiting: usize = number_in(
        QUEUE,
        args.password_check_queue.or(file.password_check_queue),
        default.max_waiting,
        1..=100_000,
        "expected 1 to 100000 waiting checks",
    )?;
    let address_burst = number_in(
        FAILURES_PER_ADDRESS,
        args.password_failures_per_address
            .or(file.password_failures_per_address),
        default.address_burst,
        1..=1_000_000,
        "expected 1 to 1000000 failures",
    )?;
    Ok(access::PasswordCheckLimits {
        concurrency,
        max_waiting,
        per_tenant_waiting: (max_waiting / 4).max(1),
        address_burst,
        ..default
    })
}
