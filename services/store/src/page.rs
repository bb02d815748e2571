//! Cursor paging: [`Page`] in, [`Paged`] out.
//!
//! Lists are keyset-paged over a unique key that never changes (tenant id,
//! device id within a tenant, audit entry id). A cursor is the last key of the
//! previous page, hex-encoded with a tag naming the list, so it is opaque to
//! clients and a cursor from one list is refused by another. Rows inserted
//! while a client pages may or may not show up, but rows that existed when it
//! started appear exactly once.

use serde::Serialize;

use crate::Error;

/// One page request. `limit` 0 means [`Page::DEFAULT_LIMIT`]; larger than
/// [`Page::MAX_LIMIT`] is clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Page {
        Page {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor` (a `next_cursor` from the previous page).
    pub fn after(limit: u32, cursor: impl Into<String>) -> Page {
        Page {
            limit,
            cursor: Some(cursor.into()),
        }
    }

    /// The limit actually used: 1..=MAX_LIMIT.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }

    /// Rows to fetch: one more than the limit, to learn whether a next page
    /// exists without a second query.
    pub(crate) fn fetch_limit(&self) -> i64 {
        i64::from(self.effective_limit()) + 1
    }

    /// The key this page starts after (`None` on the first page), or
    /// `InvalidCursor` if the cursor is not one of `kind`'s.
    pub(crate) fn after_key(&self, kind: CursorKind) -> Result<Option<String>, Error> {
        self.cursor
            .as_deref()
            .map(|cursor| decode_cursor(kind, cursor))
            .transpose()
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::first(Self::DEFAULT_LIMIT)
    }
}

/// One page of results. `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    /// Cut `rows` (fetched with [`Page::fetch_limit`]) down to the page and
    /// make the cursor from the last item's key.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        page: &Page,
        kind: CursorKind,
        key: impl Fn(&T) -> String,
    ) -> Paged<T> {
        let limit = usize::try_from(page.effective_limit()).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(kind, &key(last)))
        } else {
            None
        };
        Paged {
            items: rows,
            next_cursor,
        }
    }
}

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    Tenants,
    Devices,
    Audit,
    ApiKeys,
    Sessions,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Tenants => "t1:",
            CursorKind::Devices => "d1:",
            CursorKind::Audit => "a1:",
            CursorKind::ApiKeys => "k1:",
            CursorKind::Sessions => "s1:",
        }
    }
}

/// Longest cursor we decode: keys are at most 1024 bytes (an MQTT session's
/// client id; ids elsewhere are at most 128), hex doubles that.
const MAX_CURSOR_LEN: usize = 2 * (3 + 1024);

pub(crate) fn encode_cursor(kind: CursorKind, key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * (kind.tag().len() + key.len()));
    for b in kind.tag().bytes().chain(key.bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The key inside `cursor`, or `InvalidCursor` if it is not one of ours for
/// this list.
pub(crate) fn decode_cursor(kind: CursorKind, cursor: &str) -> Result<String, Error> {
    if cursor.len() > MAX_CURSOR_LEN || !cursor.len().is_multiple_of(2) {
        return Err(Error::InvalidCursor);
    }
    let bytes = cursor
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some((hex_val(*hi)? << 4) | hex_val(*lo)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(Error::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::InvalidCursor)?;
    match text.strip_prefix(kind.tag()) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => Err(Error::InvalidCursor),
    }
}

/// Like [`decode_cursor`] for lists keyed by an integer id.
pub(crate) fn decode_int_cursor(kind: CursorKind, cursor: &str) -> Result<i64, Error> {
    decode_cursor(kind, cursor)?
        .parse()
        .map_err(|_| Error::InvalidCursor)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        for key in ["acme", "a", "Sensor_1.x-2", "12345"] {
            let c = encode_cursor(CursorKind::Devices, key);
            assert_eq!(decode_cursor(CursorKind::Devices, &c).unwrap(), key);
        }
    }

    #[test]
    fn cursor_is_bound_to_its_list() {
        let c = encode_cursor(CursorKind::Tenants, "acme");
        assert!(matches!(
            decode_cursor(CursorKind::Devices, &c),
            Err(Error::InvalidCursor)
        ));
    }

    #[test]
    fn garbage_cursors_are_refused() {
        let long = "ab".repeat(1000);
        for bad in ["", "z", "abc", "zz", "ÿÿ", "74313a", long.as_str(), "ff"] {
            assert!(
                matches!(
                    decode_cursor(CursorKind::Tenants, bad),
                    Err(Error::InvalidCursor)
                ),
                "{bad:?}"
            );
        }
        let not_int = encode_cursor(CursorKind::Audit, "x");
        assert!(decode_int_cursor(CursorKind::Audit, &not_int).is_err());
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(Page::first(0).effective_limit(), Page::DEFAULT_LIMIT);
        assert_eq!(Page::first(7).effective_limit(), 7);
        assert_eq!(Page::first(u32::MAX).effective_limit(), Page::MAX_LIMIT);
        assert_eq!(Page::first(7).fetch_limit(), 8);
    }

    #[test]
    fn from_rows_sets_cursor_only_when_more_remain() {
        let page = Page::first(2);
        let p = Paged::from_rows(vec!["a", "b", "c"], &page, CursorKind::Tenants, |s| {
            s.to_string()
        });
        assert_eq!(p.items, ["a", "b"]);
        let c = p.next_cursor.unwrap();
        assert_eq!(decode_cursor(CursorKind::Tenants, &c).unwrap(), "b");

        let p = Paged::from_rows(vec!["a", "b"], &page, CursorKind::Tenants, |s| {
            s.to_string()
        });
        assert_eq!(p.next_cursor, None);
    }
}
