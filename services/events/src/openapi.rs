//! The event catalogue as OpenAPI 3.1 `webhooks`: one entry per event
//! type, named by it, describing the signed POST the platform sends (body
//! `{type, timestamp, data}`, Standard Webhooks headers), with the payload
//! schemas under `components.schemas`. The api crate's document takes it
//! as a [`utoipa::Modify`]: [`Webhooks`].

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{
    Components, Content, OpenApi, PathItem, PathsBuilder, Ref, RefOr, Required, Response, Schema,
};
use utoipa::{Modify, ToSchema};

use crate::catalogue::payload_schemas;
use crate::payload::DeviceFields;

/// One payload type's schema and the schemas it refers to.
pub(crate) struct PayloadSchema {
    name: String,
    schema: RefOr<Schema>,
    nested: Vec<(String, RefOr<Schema>)>,
}

impl PayloadSchema {
    pub(crate) fn of<T: ToSchema>() -> Self {
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        PayloadSchema {
            name: T::name().into_owned(),
            schema: T::schema(),
            nested,
        }
    }
}

/// Adds every event type to a document's `webhooks`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, doc: &mut OpenApi) {
        add_webhooks(doc);
    }
}

/// Adds every event type to `doc.webhooks`, and the payload schemas to its
/// components.
pub fn add_webhooks(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Components::new);
    let device_fields = PayloadSchema::of::<DeviceFields>();
    components
        .schemas
        .insert(device_fields.name.clone(), device_fields.schema);
    let mut paths = PathsBuilder::new();
    for (event_type, payload) in payload_schemas() {
        let payload_ref = RefOr::Ref(Ref::from_schema_name(payload.name.as_str()));
        let data: RefOr<Schema> = if event_type.is_device_event() {
            AllOfBuilder::new()
                .item(payload_ref)
                .item(RefOr::Ref(Ref::from_schema_name(
                    device_fields.name.as_str(),
                )))
                .into()
        } else {
            payload_ref
        };
        components.schemas.insert(payload.name, payload.schema);
        components.schemas.extend(payload.nested);
        let body = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([event_type.as_str()])),
            )
            .required("type")
            .property(
                "timestamp",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .description(Some(
                        "When the event happened (RFC 3339, microseconds, UTC)",
                    )),
            )
            .required("timestamp")
            .property("data", data)
            .required("data");
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let operation = OperationBuilder::new()
            .operation_id(Some(event_type.as_str()))
            .summary(Some(event_type.as_str()))
            .description(Some(event_type.description()))
            .tag("webhooks")
            .parameter(header(
                "webhook-id",
                "The delivery's id: the same on every retry, for deduplication",
            ))
            .parameter(header(
                "webhook-timestamp",
                "Seconds since the epoch when this attempt was signed",
            ))
            .parameter(header(
                "webhook-signature",
                "`v1,{base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\"}` \
                 with the endpoint's secret; space-separated, two while a rotated \
                 secret overlaps (Standard Webhooks)",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", Content::new(Some(body)))
                    .build(),
            ))
            .response(
                "2XX",
                Response::new("Received; any other answer, or none in time, is retried"),
            );
        paths = paths.path(
            event_type.as_str(),
            PathItem::new(HttpMethod::Post, operation),
        );
    }
    doc.webhooks = Some(paths.build());
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::{Info, OpenApiBuilder, Paths};

    use super::*;
    use crate::EventType;

    #[test]
    fn every_event_type_is_a_webhook_with_its_payload_schema() {
        let mut doc = OpenApiBuilder::new()
            .info(Info::new("t", "1"))
            .paths(Paths::new())
            .build();
        add_webhooks(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        for t in EventType::ALL {
            let body = &json["webhooks"][t.as_str()]["post"]["requestBody"]["content"]["application/json"]
                ["schema"];
            assert_eq!(body["properties"]["type"]["enum"][0], t.as_str(), "{t}");
            let data = &body["properties"]["data"];
            let reference = data["$ref"]
                .as_str()
                .or_else(|| data["allOf"][0]["$ref"].as_str())
                .unwrap();
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(
                json["components"]["schemas"][name].is_object(),
                "{t}: {name}"
            );
        }
    }
}
