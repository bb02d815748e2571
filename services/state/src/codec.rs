//! Between the broker's [`StoredRetained`] and the store's
//! [`RetainedMessage`]: the pass-through properties as a JSON object,
//! wall-clock times as UTC timestamps.

use std::sync::Arc;
use std::time::SystemTime;

use broker::StoredRetained;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mqtt::properties::PayloadFormat;
use mqtt::{Properties, QoS, TopicName};
use serde_json::{Map, Value, json};
use store::RetainedMessage;

use crate::Error;

/// The row for `message` in `tenant`.
pub(crate) fn to_row(
    tenant: &str,
    message: &StoredRetained,
    now: DateTime<Utc>,
) -> RetainedMessage {
    RetainedMessage {
        tenant_id: tenant.to_owned(),
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.to_vec(),
        qos: message.qos.to_u8(),
        properties: properties_to_json(&message.properties),
        expires_at: message.expires_at.map(DateTime::<Utc>::from),
        updated_at: now,
        owner: message.owner.as_deref().map(str::to_owned),
    }
}

/// The message a row holds; an error names what is wrong with it.
pub(crate) fn from_row(row: RetainedMessage) -> Result<StoredRetained, Error> {
    let bad = |reason: &'static str| Error::CorruptRow {
        tenant: row.tenant_id.clone(),
        topic: row.topic.clone(),
        reason,
    };
    let topic =
        TopicName::parse(row.topic.clone()).map_err(|_| bad("topic is not a topic name"))?;
    let qos = QoS::from_u8(row.qos).map_err(|_| bad("qos is not 0, 1 or 2"))?;
    let properties =
        properties_from_json(&row.properties).ok_or_else(|| bad("properties do not parse"))?;
    Ok(StoredRetained {
        topic,
        payload: Bytes::from(row.payload),
        qos,
        properties,
        expires_at: row.expires_at.map(SystemTime::from),
        owner: row.owner.as_deref().map(Arc::from),
    })
}

/// The pass-through properties a retained message keeps (MQTT-3.3.2-17,
/// -18, -20): payload format, content type, response topic, correlation
/// data (hex), user properties (pairs, order kept). Everything else is
/// per delivery or per connection and never stored.
pub(crate) fn properties_to_json(p: &Properties) -> Value {
    let mut out = Map::new();
    if let Some(format) = p.payload_format_indicator {
        let utf8 = format == PayloadFormat::Utf8;
        out.insert("payload_format_indicator".into(), json!(u8::from(utf8)));
    }
    if let Some(ct) = &p.content_type {
        out.insert("content_type".into(), json!(ct));
    }
    if let Some(rt) = &p.response_topic {
        out.insert("response_topic".into(), json!(rt.as_str()));
    }
    if let Some(cd) = &p.correlation_data {
        out.insert("correlation_data".into(), json!(hex(cd)));
    }
    // In wire form (hex), one string: as JSON pairs, 142,000 one-character
    // properties (a 1 MB PUBLISH) took 20 MB of values to write.
    if !p.user_properties.is_empty() {
        out.insert(
            "user_properties_wire".into(),
            json!(hex(p.user_properties.wire())),
        );
    }
    Value::Object(out)
}

pub(crate) fn properties_from_json(v: &Value) -> Option<Properties> {
    let o = v.as_object()?;
    let mut p = Properties::default();
    if let Some(f) = o.get("payload_format_indicator") {
        p.payload_format_indicator = Some(match f.as_u64()? {
            0 => PayloadFormat::Unspecified,
            1 => PayloadFormat::Utf8,
            _ => return None,
        });
    }
    if let Some(ct) = o.get("content_type") {
        p.content_type = Some(ct.as_str()?.to_owned());
    }
    if let Some(rt) = o.get("response_topic") {
        p.response_topic = Some(TopicName::parse(rt.as_str()?.to_owned()).ok()?);
    }
    if let Some(cd) = o.get("correlation_data") {
        p.correlation_data = Some(Bytes::from(unhex(cd.as_str()?)?));
    }
    if let Some(wire) = o.get("user_properties_wire") {
        let wire = Bytes::from(unhex(wire.as_str()?)?);
        p.user_properties = mqtt::UserProperties::from_wire(wire)?;
    } else if let Some(up) = o.get("user_properties") {
        // Rows written before the wire form.
        let pairs: Vec<(String, String)> = serde_json::from_value(up.clone()).ok()?;
        p.user_properties = mqtt::UserProperties::from_pairs(pairs).ok()?;
    }
    Some(p)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digits = s.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(*pair.first()?).to_digit(16)?;
            let lo = char::from(*pair.get(1)?).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_message_survives_the_round_trip() {
        let properties = Properties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            content_type: Some("application/json".into()),
            response_topic: Some(TopicName::parse("replies/ü").unwrap()),
            correlation_data: Some(Bytes::from_static(&[0, 1, 0xfe, 0xff])),
            user_properties: mqtt::UserProperties::from_pairs([("b", "2"), ("a", "1")]).unwrap(),
            ..Properties::default()
        };
        // Whole microseconds: what both backends keep.
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_800_000_000_123_456);
        let message = StoredRetained {
            topic: TopicName::parse("devices/d1/state").unwrap(),
            payload: Bytes::from_static(b"{\"on\":true}"),
            qos: QoS::ExactlyOnce,
            properties,
            expires_at: Some(expires_at),
            owner: Some(Arc::from("sensor-1")),
        };
        let row = to_row("acme", &message, Utc::now());
        assert_eq!(row.qos, 2);
        assert_eq!(from_row(row).unwrap(), message);
    }

    #[test]
    fn user_properties_of_older_rows_still_read() {
        let p =
            properties_from_json(&json!({"user_properties": [["k", "v"], ["k", "w"]]})).unwrap();
        assert_eq!(p.user_properties, [("k", "v"), ("k", "w")]);
        let wire = properties_to_json(&p);
        assert_eq!(
            wire,
            json!({"user_properties_wire": "2600016b0001762600016b000177"})
        );
        assert_eq!(properties_from_json(&wire).unwrap(), p);
    }

    #[test]
    fn a_bad_row_is_an_error_not_a_panic() {
        let good = to_row(
            "acme",
            &StoredRetained {
                topic: TopicName::parse("t").unwrap(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                properties: Properties::default(),
                expires_at: None,
                owner: None,
            },
            Utc::now(),
        );
        let mut bad = good.clone();
        bad.topic = "a/+".into();
        assert!(from_row(bad).is_err());
        let mut bad = good.clone();
        bad.qos = 3;
        assert!(from_row(bad).is_err());
        for props in [
            json!({"correlation_data": "abc"}),
            json!({"correlation_data": "zz"}),
            json!({"payload_format_indicator": 7}),
            json!({"user_properties": "x"}),
            json!({"user_properties_wire": "2600"}),
            json!({"user_properties_wire": "270001610001"}),
            json!([1]),
        ] {
            let mut bad = good.clone();
            bad.properties = props;
            assert!(from_row(bad).is_err());
        }
    }

    #[test]
    fn hex_round_trips() {
        for bytes in [&[][..], &[0], &[0xab, 0xcd, 0x01]] {
            assert_eq!(unhex(&hex(bytes)).unwrap(), bytes);
        }
        assert_eq!(unhex("é1"), None);
    }
}
