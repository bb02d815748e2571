//! Enums whose variants stand for one byte on the wire (packet types,
//! property identifiers, reason codes), declared with their bytes in one
//! list so that the enum and its conversions cannot drift.

/// Declares the public enum `$name` with one variant per `Variant = byte,`
/// line, together with `ALL` (every variant, in the order declared: byte
/// order), `to_u8` and `from_u8`. Doc comments pass through to the enum and
/// its variants. Every byte enum is a plain value ordered by its byte.
macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$doc:meta])* $variant:ident = $value:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Every value, in byte order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The byte on the wire.
            pub fn to_u8(self) -> u8 {
                match self { $($name::$variant => $value,)* }
            }

            /// The value for a wire byte, if one is defined.
            pub fn from_u8(byte: u8) -> Option<Self> {
                match byte { $($value => Some($name::$variant),)* _ => None }
            }
        }
    };
}
pub(crate) use byte_enum;

#[cfg(test)]
mod tests {
    use crate::packet::PacketType;
    use crate::properties::PropertyId;
    use crate::reason::ReasonCode;

    /// Every variant's byte reads back as that variant, and `ALL` is in
    /// byte order without gaps in the list.
    fn round_trips<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        to_u8: fn(T) -> u8,
        from_u8: fn(u8) -> Option<T>,
    ) {
        for &v in all {
            assert_eq!(from_u8(to_u8(v)), Some(v));
        }
        assert!(all.windows(2).all(|w| to_u8(w[0]) < to_u8(w[1])));
    }

    #[test]
    fn every_byte_enum_round_trips() {
        round_trips(PacketType::ALL, PacketType::to_u8, PacketType::from_u8);
        round_trips(PropertyId::ALL, PropertyId::to_u8, PropertyId::from_u8);
        round_trips(ReasonCode::ALL, ReasonCode::to_u8, ReasonCode::from_u8);
        assert_eq!(PacketType::ALL.len(), 15);
        assert_eq!(PropertyId::ALL.len(), 27);
        assert_eq!(PacketType::from_u8(0), None);
        assert_eq!(PropertyId::from_u8(0x04), None);
    }
}
