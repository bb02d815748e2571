//! List query strings: `?limit=&cursor=` plus each list's filters, parsed
//! strictly (unknown or repeated parameters are refused), since a filter
//! silently ignored returns the wrong items.

use store::Page;

use crate::ApiError;

/// Most `label` filters in one request.
pub(crate) const MAX_LABEL_FILTERS: usize = 16;

/// A parsed list query: the page and the other parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub page: Page,
    /// `(name, value)` of each non-paging parameter the caller allowed.
    pub filters: Vec<(String, String)>,
}

/// `?limit=&cursor=` of a list with no filters, parsed as [`parse`] does:
/// an extractor, last in a handler's arguments (after its scope, so an
/// unauthorized caller is told so before a bad query is).
pub(crate) struct PageQuery(pub Page);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        Ok(PageQuery(parse(parts.uri.query(), &[], &[])?.page))
    }
}

/// Parse `query` (without `?`), accepting `limit`, `cursor` and the names in
/// `filters` (of which only `repeatable` ones may repeat).
pub(crate) fn parse(
    query: Option<&str>,
    filters: &[&str],
    repeatable: &[&str],
) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let name = name.into_owned();
        if seen.contains(&name) && !repeatable.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` given more than once"
            )));
        }
        match name.as_str() {
            "limit" => {
                let limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=Page::MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be an integer from 1 to {}",
                            Page::MAX_LIMIT
                        ))
                    })?;
                out.page.limit = limit;
            }
            "cursor" => {
                if value.is_empty() {
                    return Err(ApiError::BadRequest("`cursor` is empty".to_owned()));
                }
                out.page.cursor = Some(value.into_owned());
            }
            other if filters.contains(&other) => {
                out.filters.push((name.clone(), value.into_owned()));
            }
            other => {
                let mut allowed = vec!["limit", "cursor"];
                allowed.extend_from_slice(filters);
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{}`; allowed: {}",
                    other.chars().take(64).collect::<String>(),
                    allowed.join(", ")
                )));
            }
        }
        seen.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_filters() {
        let q = parse(
            Some("limit=5&cursor=abc&label=a%3Db&label=c=d&status=enabled"),
            &["label", "status"],
            &["label"],
        )
        .unwrap();
        assert_eq!(q.page, Page::after(5, "abc"));
        assert_eq!(q.filters.len(), 3);
        assert_eq!(q.filters[0], ("label".into(), "a=b".into()));
        let q = parse(None, &[], &[]).unwrap();
        assert_eq!(q.page, Page::default());
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "cursor=",
            "foo=1",
            "limit=1&limit=2",
            "status=a&status=b",
        ] {
            assert!(
                matches!(
                    parse(Some(bad), &["status"], &[]),
                    Err(ApiError::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }
}
