//! The shared layout of SUBSCRIBE, SUBACK and UNSUBSCRIBE: packet
//! identifier, properties (MQTT 5 only), then a list that must not be empty
//! (MQTT-3.8.3-2, MQTT-3.9.3-1, MQTT-3.10.3-2).

use bytes::{BufMut, BytesMut};

use super::{Kind, PacketId, ProtocolVersion, read_packet_id};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::Properties;

/// The fields of a list packet; `T` is one list entry.
pub(crate) struct ListParts<T> {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: Properties,
    pub(crate) items: Vec<T>,
}

/// Reads the body of `packet`, each entry with `item`.
pub(crate) fn read<T>(
    r: &mut Reader,
    version: ProtocolVersion,
    (packet, ctx): Kind,
    mut item: impl FnMut(&mut Reader) -> Result<T, Error>,
) -> Result<ListParts<T>, Error> {
    let packet_id = read_packet_id(r, packet)?;
    let properties = Properties::read_in(r, version, ctx)?;
    let mut items = Vec::new();
    while !r.is_empty() {
        items.push(item(r)?);
    }
    if items.is_empty() {
        return Err(Error::EmptyPayload(packet));
    }
    Ok(ListParts {
        packet_id,
        properties,
        items,
    })
}

/// Writes the body of `packet`, each entry with `item`.
pub(crate) fn write<T>(
    (packet_id, properties, items): (PacketId, &Properties, &[T]),
    version: ProtocolVersion,
    (packet, ctx): Kind,
    dst: &mut BytesMut,
    mut item: impl FnMut(&T, &mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if items.is_empty() {
        return Err(EncodeError::EmptyPayload(packet));
    }
    dst.put_u16(packet_id.get());
    properties.write_in(version, ctx, dst)?;
    for entry in items {
        item(entry, dst)?;
    }
    Ok(())
}

/// Implements `read` and [`Body`](super::Body) for the list packet `$name`,
/// whose entries live in the field `$items` and are read and written by the
/// functions `read_entry(r, version)` and `write_entry(entry, version, dst)`
/// of the packet's module.
macro_rules! list_packet {
    ($name:ident, $items:ident, flags = $flags:expr) => {
        $crate::packet::impl_codec!(
            $name,
            read = |r: &mut $crate::codec::Reader, version, kind| {
                $crate::packet::list::read(r, version, kind, |r| read_entry(r, version)).map(
                    |parts| Self {
                        packet_id: parts.packet_id,
                        $items: parts.items,
                        properties: parts.properties,
                    },
                )
            },
            write = |p: &Self, version, kind, dst| {
                let parts = (p.packet_id, &p.properties, &p.$items[..]);
                $crate::packet::list::write(parts, version, kind, dst, |entry, dst| {
                    write_entry(entry, version, dst)
                })
                .map(|()| $flags)
            }
        );
    };
}
pub(crate) use list_packet;
