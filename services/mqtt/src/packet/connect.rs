//! CONNECT (3.1): the first packet a client sends; it also fixes the
//! protocol version of the connection.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Body, ProtocolVersion, QoS};
use crate::codec::{Reader, put_binary, put_string};
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::topic::TopicName;

const PROTOCOL_NAME: &str = "MQTT";

const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

/// The Will Message a client leaves with the server (3.1.2.5, 3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (MQTT 5).
    pub properties: Properties,
}

impl LastWill {
    /// A will of `payload` on `topic` at `qos`, without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload: payload.into(),
            qos,
            retain,
            properties: Properties::default(),
        }
    }
}

/// CONNECT (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The version named by the protocol level. On encode the `version`
    /// argument wins; this field reports what was decoded.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep Alive in seconds, 0 = off.
    pub keep_alive: u16,
    /// Client Identifier; may be empty (server assigns one).
    pub client_id: String,
    /// The Will Message, if any.
    pub will: Option<LastWill>,
    /// User Name.
    pub username: Option<String>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5).
    pub properties: Properties,
}

impl Connect {
    /// A clean-start CONNECT for `client_id` with no will or credentials.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<String>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    pub(crate) fn read(r: &mut Reader) -> Result<Self, Error> {
        // MQTT-3.1.2-1: anything but "MQTT" (e.g. 3.1's "MQIsdp").
        if r.string()? != PROTOCOL_NAME {
            return Err(Error::InvalidProtocolName);
        }
        let protocol = match r.u8()? {
            4 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            level => return Err(Error::UnsupportedProtocolLevel(level)), // MQTT-3.1.2-2
        };
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(Error::ConnectReservedFlag); // MQTT-3.1.2-3
        }
        let has_will = flags & WILL != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0b11)?; // MQTT-3.1.2-14
        let will_retain = flags & WILL_RETAIN != 0;
        // MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(Error::WillFlagsWithoutWill);
        }
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        // MQTT-3.1.2-22; 5.0 allows a password alone (3.1.2.9).
        if protocol == ProtocolVersion::V311 && has_password && !has_username {
            return Err(Error::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = Properties::read_in(r, protocol, PropertyContext::Connect)?;
        // 3.1.2.11.10
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(Error::AuthDataWithoutMethod);
        }
        let client_id = r.string()?; // MQTT-3.1.3-4
        let will = if has_will {
            let properties = Properties::read_in(r, protocol, PropertyContext::Will)?;
            let topic = TopicName::parse(r.string()?).map_err(Error::InvalidTopicName)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = has_username.then(|| r.string()).transpose()?;
        let password = has_password.then(|| r.binary()).transpose()?;
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }
}

impl Body for Connect {
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        if version == ProtocolVersion::V311 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername); // MQTT-3.1.2-22
        }
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos.to_u8() << 3);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        put_string(dst, PROTOCOL_NAME)?;
        dst.put_u8(version.level());
        dst.put_u8(flags);
        dst.put_u16(self.keep_alive);
        if version == ProtocolVersion::V5 {
            let p = &self.properties;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(EncodeError::AuthDataWithoutMethod);
            }
            p.write(PropertyContext::Connect, dst)?;
        }
        put_string(dst, &self.client_id)?;
        if let Some(will) = &self.will {
            will.properties
                .write_in(version, PropertyContext::Will, dst)?;
            put_string(dst, will.topic.as_str())?;
            put_binary(dst, &will.payload)?;
        }
        if let Some(username) = &self.username {
            put_string(dst, username)?;
        }
        if let Some(password) = &self.password {
            put_binary(dst, password)?;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, decode_one, encode};
    use crate::topic::TopicError;

    /// `mosquitto_pub -i test -t t -m m` (3.1.1, clean session, keep alive 60).
    const MOSQUITTO_CONNECT: &[u8] = &[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x04, b't',
        b'e', b's', b't',
    ];

    #[test]
    fn decodes_a_real_v311_connect_and_reencodes_it_exactly() {
        let p = decode_one(MOSQUITTO_CONNECT, V5).unwrap();
        let Packet::Connect(c) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(c.protocol, V4);
        assert_eq!(c.client_id, "test");
        assert_eq!(c.keep_alive, 60);
        assert!(c.clean_start);
        assert_eq!(encode(&p, V4), MOSQUITTO_CONNECT);
    }

    #[test]
    fn v5_connect_with_session_expiry_byte_exact() {
        let bytes = [
            0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x11,
            0x00, 0x00, 0x00, 0x0A, 0x00, 0x01, b'c',
        ];
        let mut c = Connect::new(V5, "c");
        c.properties.session_expiry_interval = Some(10);
        assert_eq!(encode(&Packet::Connect(Box::new(c.clone())), V5), bytes);
        assert_eq!(
            decode_one(&bytes, V4).unwrap(),
            Packet::Connect(Box::new(c))
        );
    }

    fn with_flags(flags: u8, level: u8) -> Vec<u8> {
        let mut b = MOSQUITTO_CONNECT.to_vec();
        b[8] = level;
        b[9] = flags;
        b
    }

    #[test]
    fn rejects_bad_headers_and_flags() {
        let cases = [
            (with_flags(0x03, 4), Error::ConnectReservedFlag),
            (with_flags(0x02, 3), Error::UnsupportedProtocolLevel(3)),
            (with_flags(0x02 | 0x18, 4), Error::InvalidQoS(3)),
            (with_flags(0x02 | 0x08, 4), Error::WillFlagsWithoutWill),
            (
                with_flags(0x02 | WILL_RETAIN, 4),
                Error::WillFlagsWithoutWill,
            ),
            (
                with_flags(0x02 | PASSWORD, 4),
                Error::PasswordWithoutUsername,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_one(&bytes, V4), Err(err));
        }
        let mut b = MOSQUITTO_CONNECT.to_vec();
        b[4] = b'X';
        assert_eq!(decode_one(&b, V4), Err(Error::InvalidProtocolName));
    }

    #[test]
    fn v5_allows_password_without_username() {
        let mut c = Connect::new(V5, "x");
        c.password = Some(Bytes::from_static(b"pw"));
        let bytes = encode(&Packet::Connect(Box::new(c.clone())), V5);
        assert_eq!(
            decode_one(&bytes, V5).unwrap(),
            Packet::Connect(Box::new(c.clone()))
        );
        let mut buf = BytesMut::new();
        assert_eq!(
            Packet::Connect(Box::new(c)).encode(V4, &mut buf),
            Err(EncodeError::PasswordWithoutUsername)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn will_topic_must_be_a_topic_name() {
        let mut c = Connect::new(V4, "x");
        c.will = Some(LastWill::new(
            TopicName::parse("w").unwrap(),
            "bye",
            QoS::AtLeastOnce,
            true,
        ));
        let mut bytes = encode(&Packet::Connect(Box::new(c)), V4);
        let at = bytes.iter().position(|&b| b == b'w').unwrap();
        bytes[at] = b'#';
        assert_eq!(
            decode_one(&bytes, V4),
            Err(Error::InvalidTopicName(TopicError::WildcardInName))
        );
    }

    #[test]
    fn auth_data_needs_a_method() {
        let mut c = Connect::new(V5, "x");
        c.properties.authentication_data = Some(Bytes::from_static(b"d"));
        let mut buf = BytesMut::new();
        assert_eq!(
            Packet::Connect(Box::new(c)).encode(V5, &mut buf),
            Err(EncodeError::AuthDataWithoutMethod)
        );
    }
}
