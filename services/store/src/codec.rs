//! Column codecs shared by both backends.
//!
//! [`Ts`] is a timestamp that is `TIMESTAMPTZ` on Postgres and fixed-width
//! RFC 3339 text on SQLite. sqlx's own SQLite encoding of `DateTime<Utc>`
//! varies the number of fractional digits, so text order would not be time
//! order; ours always writes six (microseconds, Postgres' precision), which
//! also makes a value read back equal the value written on both backends.
//! Reading needs no codec: sqlx decodes RFC 3339 text into `DateTime<Utc>`,
//! so row types hold plain `DateTime<Utc>` fields.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

/// The current time, truncated to what both backends store (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A UTC timestamp column (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ts(pub DateTime<Utc>);

impl Ts {
    /// `2026-01-02T03:04:05.000006Z`: always 27 bytes for years 0000–9999.
    pub(crate) fn to_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub(crate) fn parse_text(s: &str) -> Result<Ts, chrono::ParseError> {
        Ok(Ts(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc)))
    }
}

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Self {
        Ts(t)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <&str as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Ts::parse_text(text)?)
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn text_is_fixed_width_and_round_trips() {
        let whole = Ts(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        assert_eq!(whole.to_text(), "2026-01-02T03:04:05.000000Z");
        let t = Ts(now());
        let text = t.to_text();
        assert_eq!(text.len(), 27);
        assert_eq!(Ts::parse_text(&text).unwrap(), t);
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Ts(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let b = Ts(a.0 + chrono::Duration::microseconds(1));
        let c = Ts(a.0 + chrono::Duration::seconds(10));
        assert!(a.to_text() < b.to_text());
        assert!(b.to_text() < c.to_text());
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().timestamp_subsec_nanos() % 1_000, 0);
    }
}
