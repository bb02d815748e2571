//! The platform's device topic conventions, in one place: a
//! device publishes under `devices/{d}/…` and is sent commands under
//! `commands/{d}/…`; its presence is `devices/{d}/status`, the state it
//! reports `devices/{d}/state/reported` and the state the platform wants
//! `commands/{d}/state/desired`. Topics are tenant-relative (the broker
//! keeps tenants apart). Everything takes and returns `&str`, so the
//! broker's `TopicName`, stored rows and REST paths all read the same way;
//! topics are taken apart with `strip_prefix`/`strip_suffix`, never indexed.

use crate::DeviceId;

const DEVICES: &str = "devices/";
const COMMANDS: &str = "commands/";
const STATUS: &str = "/status";
const REPORTED: &str = "/state/reported";
const DESIRED: &str = "/state/desired";

/// `devices/{device}/`: every topic a device publishes on starts so.
pub fn device_prefix(device: &str) -> String {
    format!("{DEVICES}{device}/")
}

/// `commands/{device}/`: every topic a device is sent commands on starts so.
pub fn command_prefix(device: &str) -> String {
    format!("{COMMANDS}{device}/")
}

/// `devices/{device}/status`, the presence topic.
pub fn status(device: &str) -> String {
    format!("{DEVICES}{device}{STATUS}")
}

/// `commands/{device}/state/desired`, where the desired state is published.
pub fn desired_state(device: &str) -> String {
    format!("{COMMANDS}{device}{DESIRED}")
}

/// `devices/{d}/…` (at least one level after `d`) → `d`, if not empty.
pub fn device_of(topic: &str) -> Option<&str> {
    let (device, _) = topic.strip_prefix(DEVICES)?.split_once('/')?;
    (!device.is_empty()).then_some(device)
}

/// `devices/{d}/status` → `d`, for a `d` that is a device id.
pub fn status_of(topic: &str) -> Option<&str> {
    device_between(topic, DEVICES, STATUS)
}

/// `devices/{d}/state/reported` → `d`, for a `d` that is a device id.
pub fn reporting_device(topic: &str) -> Option<&str> {
    device_between(topic, DEVICES, REPORTED)
}

/// The one level between `prefix` and `suffix`, if it is a device id (which
/// has no `/`, so `devices/a/b/status` is nobody's status topic).
fn device_between<'t>(topic: &'t str, prefix: &str, suffix: &str) -> Option<&'t str> {
    let device = topic.strip_prefix(prefix)?.strip_suffix(suffix)?;
    DeviceId::is_valid(device).then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topics_are_built_by_the_conventions() {
        let built = [device_prefix, command_prefix, status, desired_state].map(|f| f("d1"));
        let expected = [
            "devices/d1/",
            "commands/d1/",
            "devices/d1/status",
            "commands/d1/state/desired",
        ];
        assert_eq!(built, expected);
    }

    #[test]
    fn topics_are_read_by_the_conventions() {
        assert_eq!(device_of("devices/d1/state/reported"), Some("d1"));
        assert_eq!(device_of("devices/d1/x"), Some("d1"));
        assert_eq!(device_of("devices/d1"), None);
        assert_eq!(device_of("devices//x"), None);
        assert_eq!(device_of("commands/d1/x"), None);

        assert_eq!(
            reporting_device("devices/d-1.x/state/reported"),
            Some("d-1.x")
        );
        assert_eq!(reporting_device("devices/d1/state/desired"), None);
        assert_eq!(reporting_device("devices/a/b/state/reported"), None);
        assert_eq!(reporting_device("devices//state/reported"), None);
        assert_eq!(reporting_device("commands/d1/state/reported"), None);

        assert_eq!(status_of("devices/d1/status"), Some("d1"));
        assert_eq!(status_of("devices/d1/status/x"), None);
        assert_eq!(status_of("devices/d1/state/reported"), None);
        assert_eq!(status_of("devices/a/b/status"), None);
    }

    proptest! {
        // What the builders make, the readers give back.
        #[test]
        fn readers_invert_builders(device in "[A-Za-z0-9._-]{1,128}") {
            let status = status(&device);
            prop_assert_eq!(status_of(&status), Some(device.as_str()));
            let reported = format!("{}state/reported", device_prefix(&device));
            prop_assert_eq!(reporting_device(&reported), Some(device.as_str()));
            prop_assert_eq!(device_of(&reported), Some(device.as_str()));
        }

        #[test]
        fn readers_never_panic(topic in "\\PC{0,40}") {
            let _ = (device_of(&topic), status_of(&topic), reporting_device(&topic));
        }
    }
}
