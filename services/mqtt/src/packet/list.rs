//! The shared layout of SUBSCRIBE, SUBACK, UNSUBSCRIBE and the MQTT 5
//! UNSUBACK: packet identifier, properties (MQTT 5 only), then a list that
//! must not be empty (MQTT-3.8.3-2, MQTT-3.9.3-1, MQTT-3.10.3-2,
//! MQTT-3.11.3-1).

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

/// Implements, for the list packet `$name` whose entries of type `$entry`
/// live in the field `$items`, `from_parts`, which builds it from a
/// [`ListParts`]; with `new`, also `new(packet_id, $items)` without
/// properties.
macro_rules! list_fields {
    ($name:ident, $items:ident: $entry:ty) => {
        impl $name {
            pub(crate) fn from_parts(parts: $crate::packet::list::ListParts<$entry>) -> Self {
                Self {
                    packet_id: parts.packet_id,
                    $items: parts.items,
                    properties: parts.properties,
                }
            }
        }
    };
    ($name:ident, $items:ident: $entry:ty, new) => {
        $crate::packet::list::list_fields!($name, $items: $entry);

        impl $name {
            #[doc = concat!(
                "The packet of `packet_id` and `", stringify!($items), "`, without properties."
            )]
            pub fn new(packet_id: $crate::packet::PacketId, $items: Vec<$entry>) -> Self {
                Self {
                    packet_id,
                    $items,
                    properties: $crate::properties::Properties::default(),
                }
            }
        }
    };
}
pub(crate) use list_fields;

/// Implements [`list_fields!`] (`new` too when asked), `read` and
/// [`Body`](super::Body) for the list packet `$name`, whose entries are read
/// and written by the functions `read_entry(r, version)` and
/// `write_entry(entry, version, dst)` of the packet's module.
macro_rules! list_packet {
    ($name:ident, $items:ident: $entry:ty, flags = $flags:expr $(, $new:ident)?) => {
        $crate::packet::list::list_fields!($name, $items: $entry $(, $new)?);

        $crate::packet::impl_codec!(
            $name,
            read = |r: &mut $crate::codec::Reader, version, kind| {
                $crate::packet::list::read(r, version, kind, |r| read_entry(r, version))
                    .map(Self::from_parts)
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
