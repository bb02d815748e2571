//! The MQTT password checks' bounds (`--password-check-concurrency` …),
//! resolved into an [`access::PasswordCheckLimits`] whose defaults are the
//! `access` crate's own.

use super::{Bounds, FileConfig, Setting};
use crate::cli::PasswordCheckArgs;
use crate::error::Error;

limit!(
    CONCURRENCY_BOUNDS,
    CONCURRENCY,
    "--password-check-concurrency",
    "FLEETMQ_PASSWORD_CHECK_CONCURRENCY",
    "password_check_concurrency",
    1..=1024,
    "expected 1 to 1024 checks at once"
);
limit!(
    QUEUE_BOUNDS,
    QUEUE,
    "--password-check-queue",
    "FLEETMQ_PASSWORD_CHECK_QUEUE",
    "password_check_queue",
    1..=100_000,
    "expected 1 to 100000 waiting checks"
);
limit!(
    FAILURES_PER_ADDRESS_BOUNDS,
    FAILURES_PER_ADDRESS,
    "--password-failures-per-address",
    "FLEETMQ_PASSWORD_FAILURES_PER_ADDRESS",
    "password_failures_per_address",
    1..=1_000_000,
    "expected 1 to 1000000 failures"
);

pub(super) fn resolve(
    args: &PasswordCheckArgs,
    file: &FileConfig,
) -> Result<access::PasswordCheckLimits, Error> {
    let default = access::PasswordCheckLimits::default();
    let concurrency = CONCURRENCY_BOUNDS.given(
        args.password_check_concurrency
            .or(file.password_check_concurrency),
        default.concurrency,
    )?;
    let max_waiting: usize = QUEUE_BOUNDS.given(
        args.password_check_queue.or(file.password_check_queue),
        default.max_waiting,
    )?;
    let address_burst = FAILURES_PER_ADDRESS_BOUNDS.given(
        args.password_failures_per_address
            .or(file.password_failures_per_address),
        default.address_burst,
    )?;
    Ok(access::PasswordCheckLimits {
        concurrency,
        max_waiting,
        per_tenant_waiting: (max_waiting / 4).max(1),
        address_burst,
        ..default
    })
}
