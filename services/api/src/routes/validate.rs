//! Bounds on what clients store: names, labels, attributes. Each check adds
//! [`FieldError`]s (with the JSON pointer of the bad field) to a list, so
//! one answer names every bad field.

use serde_json::{Map, Value};
use store::Labels;

use crate::FieldError;

pub(crate) const MAX_NAME_CHARS: usize = 200;
pub(crate) const MAX_LABELS: usize = 64;
pub(crate) const MAX_LABEL_KEY_LEN: usize = 63;
pub(crate) const MAX_LABEL_VALUE_LEN: usize = 256;
/// Serialized size of a device's attributes object.
pub(crate) const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Nesting depth of attributes (the object itself is depth 1).
pub(crate) const MAX_ATTRIBUTES_DEPTH: usize = 8;

/// A display name: 1 to 200 characters, no control characters.
pub(crate) fn name(name: &str, pointer: &str, errors: &mut Vec<FieldError>) {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            pointer,
            format!("must be 1 to {MAX_NAME_CHARS} characters, none of them control characters"),
        ));
    }
}

/// Label keys `[A-Za-z0-9._/-]{1,63}`, values up to 256 characters
/// without control characters, at most 64 labels.
pub(crate) fn labels(labels: &Labels, pointer: &str, errors: &mut Vec<FieldError>) {
    if labels.len() > MAX_LABELS {
        errors.push(FieldError::new(
            pointer,
            format!("at most {MAX_LABELS} labels"),
        ));
        return;
    }
    for (key, value) in labels {
        let at = format!("{pointer}/{}", escape(key));
        if !label_key_ok(key) {
            errors.push(FieldError::new(
                at.clone(),
                format!(
                    "label keys are 1 to {MAX_LABEL_KEY_LEN} characters from A-Z, a-z, 0-9, \
                     '.', '_', '/' and '-'"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                at,
                format!(
                    "label values are at most {MAX_LABEL_VALUE_LEN} characters, without control \
                     characters"
                ),
            ));
        }
    }
}

/// The OpenAPI schema of a `labels` object: what [`labels`] accepts.
pub(crate) fn labels_schema() -> utoipa::openapi::Object {
    labels_object(false)
}

/// [`labels_schema`] as a merge patch: the object, or any value, may be
/// `null` (remove).
pub(crate) fn labels_patch_schema() -> utoipa::openapi::Object {
    labels_object(true)
}

fn labels_object(nullable: bool) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let of = |t: Type| {
        if nullable {
            SchemaType::from_iter([t, Type::Null])
        } else {
            SchemaType::new(t)
        }
    };
    ObjectBuilder::new()
        .schema_type(of(Type::Object))
        .description(Some(format!(
            "At most {MAX_LABELS} labels; keys `[A-Za-z0-9._/-]{{1,{MAX_LABEL_KEY_LEN}}}`, \
             values up to {MAX_LABEL_VALUE_LEN} characters without control characters."
        )))
        .max_properties(Some(MAX_LABELS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(format!("^[A-Za-z0-9._/-]{{1,{MAX_LABEL_KEY_LEN}}}$"))),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(of(Type::String))
                .pattern(Some(format!(
                    "^[^\\u0000-\\u001f\\u007f-\\u009f]{{0,{MAX_LABEL_VALUE_LEN}}}$"
                ))),
        ))
        .build()
}

pub(crate) fn label_key_ok(key: &str) -> bool {
    (1..=MAX_LABEL_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// At most 16 KiB serialized and 8 levels deep, with no U+0000 in any
/// string or key (PostgreSQL's `jsonb` cannot hold it, and both backends
/// must accept the same documents).
pub(crate) fn attributes(attrs: &Map<String, Value>, pointer: &str, errors: &mut Vec<FieldError>) {
    for (key, value) in attrs {
        nul_free(key, value, pointer, errors);
    }
    let size = serde_json::to_vec(attrs).map_or(usize::MAX, |v| v.len());
    if size > MAX_ATTRIBUTES_BYTES {
        errors.push(FieldError::new(
            pointer,
            format!("at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"),
        ));
    }
    if attrs.values().map(depth).max().unwrap_or(0) + 1 > MAX_ATTRIBUTES_DEPTH {
        errors.push(FieldError::new(
            pointer,
            format!("nested at most {MAX_ATTRIBUTES_DEPTH} levels deep"),
        ));
    }
}

/// Adds an error for `key`/`value` (under `pointer`) when it holds U+0000.
fn nul_free(key: &str, value: &Value, pointer: &str, errors: &mut Vec<FieldError>) {
    let at = format!("{pointer}/{}", escape(key));
    if key.contains('\0') {
        errors.push(FieldError::new(at, "keys cannot contain U+0000"));
        return;
    }
    match value {
        Value::String(s) if s.contains('\0') => {
            errors.push(FieldError::new(at, "strings cannot contain U+0000"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                nul_free(&i.to_string(), item, &at, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                nul_free(k, v, &at, errors);
            }
        }
        _ => {}
    }
}

/// The OpenAPI schema of an `attributes` object (`nullable` for merge
/// patches). Keys are constrained; the no-U+0000 rule for nested strings is
/// only described: a recursive schema for it defeats client generators.
pub(crate) fn attributes_schema() -> utoipa::openapi::Object {
    attributes_object(false)
}

/// [`attributes_schema`] as a merge patch member: `null` empties it.
pub(crate) fn attributes_patch_schema() -> utoipa::openapi::Object {
    attributes_object(true)
}

fn attributes_object(nullable: bool) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let kind = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::new(Type::Object)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .description(Some(format!(
            "A JSON object of at most {} KiB, nested at most {MAX_ATTRIBUTES_DEPTH} deep; \
             no string or key anywhere in it may contain U+0000.",
            MAX_ATTRIBUTES_BYTES / 1024
        )))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[^\\u0000]*$")),
        ))
        .build()
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
pub(crate) fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge_patch(slot, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

/// RFC 6901 token escaping.
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = obj(json!({"a": "b", "c": {"d": "e", "f": "g"}, "x": 1}));
        merge_patch(
            &mut target,
            obj(json!({"a": "z", "c": {"f": null}, "x": {"y": 2}})),
        );
        assert_eq!(
            Value::Object(target),
            json!({"a": "z", "c": {"d": "e"}, "x": {"y": 2}})
        );
    }

    #[test]
    fn bounds() {
        let mut errors = Vec::new();
        let mut labels = Labels::new();
        labels.insert("ok/key".into(), "v".into());
        labels.insert("bad key".into(), "x".repeat(300));
        self::labels(&labels, "/labels", &mut errors);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].pointer, "/labels/bad key");

        let mut errors = Vec::new();
        let mut deep = json!(1);
        for _ in 0..10 {
            deep = json!([deep]);
        }
        attributes(&obj(json!({ "d": deep })), "/attributes", &mut errors);
        assert_eq!(errors.len(), 1);

        let mut errors = Vec::new();
        name("", "/name", &mut errors);
        name("ok", "/name", &mut errors);
        name("a\nb", "/name", &mut errors);
        assert_eq!(errors.len(), 2);
    }
}
