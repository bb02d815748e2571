//! [`AccessError`] (failures of this crate's own machinery) and
//! [`Refusal`] (why a client was turned away), each mapped once to the
//! broker's [`AuthError`] and so to a CONNACK reason code.

use broker::AuthError;

/// Something this crate could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The store failed (not "not found": that is a refusal).
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// argon2 refused to hash (parameters, lengths).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored tenant id the broker does not accept (a bug: both check
    /// the same rule).
    #[error("invalid tenant id {0}")]
    InvalidTenantId(String),
    /// A blocking task (password verification) did not finish.
    #[error("password verification task failed: {0}")]
    Task(String),
}

/// Why a CONNECT was refused; logged at info, then mapped to [`AuthError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Neither a client certificate nor a user name and password.
    #[error("no client certificate and no user name and password")]
    NoCredentials,
    /// The certificate does not prove an identity (chain, validity, names).
    #[error("certificate refused: {0}")]
    Certificate(pki::IdentityError),
    /// Our CA issued it, but the tenant has no record of the serial.
    #[error("certificate serial {serial} is not on record")]
    UnknownSerial {
        /// The leaf's serial.
        serial: String,
    },
    /// The serial is recorded for another device.
    #[error("certificate serial {serial} belongs to device {recorded}")]
    SerialOfAnotherDevice {
        /// The leaf's serial.
        serial: String,
        /// The device it was issued to.
        recorded: String,
    },
    /// Revoked.
    #[error("certificate {serial} is revoked")]
    Revoked {
        /// The leaf's serial.
        serial: String,
    },
    /// Issued before the device's or tenant's revocation floor.
    #[error("certificate {serial} was issued at {issued_at}, before the revocation floor {floor}")]
    BelowFloor {
        /// The leaf's serial.
        serial: String,
        /// When it was issued.
        issued_at: chrono::DateTime<chrono::Utc>,
        /// The floor in force.
        floor: chrono::DateTime<chrono::Utc>,
    },
    /// No such device.
    #[error("unknown device")]
    UnknownDevice,
    /// No such device, and the tenant's CA that issued the certificate does
    /// not register devices just in time.
    #[error("unknown device, and just-in-time registration is off for CA {ca}")]
    UnknownDeviceNoJit {
        /// Hex subject key identifier of the issuing CA.
        ca: String,
    },
    /// The device is disabled.
    #[error("device is disabled")]
    DeviceDisabled,
    /// The device has no password set.
    #[error("device has no password")]
    NoPassword,
    /// The password does not match.
    #[error("wrong password")]
    WrongPassword,
    /// No device or service credential has this user name.
    #[error("unknown user name")]
    UnknownUser,
    /// The client's address has used up its budget of failed password
    /// checks: refused without checking (see [`crate::PasswordChecks`]).
    #[error("too many failed password checks from this address")]
    AddressOverBudget,
    /// Too many password checks are waiting: refused as Server busy.
    #[error("too many password checks waiting")]
    ChecksBusy,
    /// A device must connect with its id as client id.
    #[error("client id {client_id:?} is not the device id")]
    ClientIdNotDevice {
        /// What it sent.
        client_id: String,
    },
    /// A service credential may not use a device's id as client id: that
    /// id (and the session under it) belongs to the device.
    #[error("client id {client_id:?} is a device's id")]
    ClientIdOfDevice {
        /// What it sent.
        client_id: String,
    },
}

impl From<&Refusal> for AuthError {
    fn from(r: &Refusal) -> AuthError {
        match r {
            Refusal::NoCredentials
            | Refusal::Certificate(_)
            | Refusal::UnknownSerial { .. }
            | Refusal::SerialOfAnotherDevice { .. }
            | Refusal::UnknownDevice
            | Refusal::UnknownDeviceNoJit { .. }
            | Refusal::NoPassword
            | Refusal::WrongPassword
            | Refusal::UnknownUser
            | Refusal::AddressOverBudget => AuthError::BadCredentials,
            Refusal::ChecksBusy => AuthError::Busy,
            Refusal::Revoked { .. } | Refusal::BelowFloor { .. } | Refusal::DeviceDisabled => {
                AuthError::NotAuthorized
            }
            Refusal::ClientIdNotDevice { .. } | Refusal::ClientIdOfDevice { .. } => {
                AuthError::ClientIdNotValid
            }
        }
    }
}

impl From<&AccessError> for AuthError {
    fn from(e: &AccessError) -> AuthError {
        AuthError::Unavailable(e.to_string())
    }
}
