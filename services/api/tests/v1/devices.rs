use std::collections::BTreeSet;

use serde_json::{Value, json};
use store::NewDevice;
use store::testing::TestDb;

use http::Method;

use crate::{TestApp, request};

/// The device collection of tenant `acme`, which every test here creates.
const DEVICES: &str = "/v1/tenants/acme/devices";

async fn device_crud(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    let created = t
        .post(
            DEVICES,
            a,
            json!({"id": "Sensor_1.x-2", "labels": {"room": "lab", "floor": "2"},
                   "attributes": {"fw": {"version": "1.0", "channel": "beta"}}}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["id"], "Sensor_1.x-2");
    assert_eq!(created["tenant_id"], "acme");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["labels"]["room"], "lab");

    let one = format!("{DEVICES}/Sensor_1.x-2");
    assert_eq!(t.fetch(&one, a).await, created);

    // Merge patch: set, remove, nested merge, replace.
    let patched = t
        .patch(
            &one,
            a,
            json!({"labels": {"room": "hall", "floor": null, "new": "yes"},
                   "attributes": {"fw": {"channel": null, "version": "1.1"}, "x": [1]},
                   "enabled": false}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["labels"], json!({"room": "hall", "new": "yes"}));
    assert_eq!(
        patched["attributes"],
        json!({"fw": {"version": "1.1"}, "x": [1]})
    );
    assert_eq!(patched["enabled"], false);
    let cleared = t
        .patch(&one, a, json!({"labels": null}))
        .await
        .expect(200)
        .body;
    assert_eq!(cleared["labels"], json!({}));
    assert_eq!(cleared["attributes"]["x"], json!([1]));

    t.post(DEVICES, a, json!({"id": "Sensor_1.x-2"}))
        .await
        .problem(409, "already-exists");
    t.delete(&one, a).await.expect(204);
    t.get(&one, a).await.problem(404, "not-found");
    t.delete(&one, a).await.problem(404, "not-found");
    t.patch(&one, a, json!({"enabled": true}))
        .await
        .problem(404, "not-found");
    // Devices of a tenant that does not exist.
    t.post("/v1/tenants/nope/devices", a, json!({"id": "d"}))
        .await
        .problem(404, "not-found");
    t.get("/v1/tenants/nope/devices", a)
        .await
        .problem(404, "not-found");
}

async fn device_validation(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    for bad in [
        "",
        "a/b",
        "a+b",
        "a#",
        "$SYS",
        "a b",
        "d@acme",
        "é",
        &"a".repeat(129),
    ] {
        t.post(DEVICES, a, json!({ "id": bad }))
            .await
            .invalid_at("/id");
    }
    let cases: [(Value, &str); 7] = [
        (json!({"id": "d", "color": "red"}), "/color"),
        (json!({"id": "d", "labels": {"k": 1}}), "/labels/k"),
        (
            json!({"id": "d", "labels": {"bad key": "v"}}),
            "/labels/bad key",
        ),
        (
            json!({"id": "d", "labels": {"k": "v".repeat(300)}}),
            "/labels/k",
        ),
        (
            json!({"id": "d", "attributes": {"a": "x".repeat(17_000)}}),
            "/attributes",
        ),
        (json!({"id": "d", "attributes": [1]}), "/attributes"),
        (json!({"id": "d", "enabled": "yes"}), "/enabled"),
    ];
    for (body, pointer) in cases {
        t.post(DEVICES, a, body.clone()).await.invalid_at(pointer);
    }
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    t.post(DEVICES, a, json!({"id": "d", "labels": many}))
        .await
        .problem(422, "validation");

    t.device("acme", "d").await;
    let one = format!("{DEVICES}/d");
    t.patch(&one, a, json!({"enabled": null}))
        .await
        .invalid_at("/enabled");
    t.patch(&one, a, json!({"labels": {"k": 5}}))
        .await
        .invalid_at("/labels/k");
    t.patch(&one, a, json!({"id": "other"}))
        .await
        .invalid_at("/id");

    for q in [
        "status=on",
        "status=weird",
        "label=novalue",
        "label==v",
        "limit=5000",
        "cursor=74313a61",
        "status=enabled&status=disabled",
        "sort=id",
    ] {
        t.get(&format!("{DEVICES}?{q}"), a)
            .await
            .problem(400, "bad-request");
    }
}

async fn device_filters(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    for (id, room, enabled) in [
        ("a1", "lab", true),
        ("a2", "lab", false),
        ("a3", "hall", true),
    ] {
        t.post(
            DEVICES,
            a,
            json!({"id": id, "labels": {"room": room, "kind": "temp"}, "enabled": enabled}),
        )
        .await
        .expect(201);
    }
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = t.fetch(DEVICES, a).await;
    assert_eq!(ids(&all), ["a1", "a2", "a3"]);
    assert!(all["next_cursor"].is_null());
    for (query, want) in [
        ("label=room%3Dlab", &["a1", "a2"][..]),
        ("label=room=lab&status=enabled", &["a1"]),
        ("status=disabled", &["a2"]),
        ("label=room=hall&label=kind=temp", &["a3"]),
        ("label=room=hall&label=kind=other", &[]),
    ] {
        let r = t.get(&format!("{DEVICES}?{query}"), a).await.expect(200);
        assert_eq!(ids(&r.body), want, "{query}");
    }
}

/// 2,500 devices paged 100 at a time while more are being added: every
/// device that existed before paging started is seen exactly once, in
/// order, and nothing is seen twice.
async fn paging_while_adding(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    for i in 0..2500 {
        t.store
            .create_device("acme", &NewDevice::new(format!("dev-{i:05}")))
            .await
            .unwrap();
    }
    let writer = {
        let app = TestApp {
            app: t.app.clone(),
            keys: t.keys.clone(),
            store: t.store.clone(),
            admin: t.admin.clone(),
        };
        tokio::spawn(async move {
            // Interleaved with the existing ids, before and after them.
            for i in 0..150 {
                let id = format!("dev-{:05}-new", i * 17);
                app.device("acme", &id).await;
                let id = format!("aaa-{i:03}");
                app.device("acme", &id).await;
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/tenants/acme/devices?limit=100&cursor={c}"),
            None => "/v1/tenants/acme/devices?limit=100".to_owned(),
        };
        let page = t.fetch(&uri, &t.admin).await;
        pages += 1;
        for d in page["items"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(pages >= 25, "{pages}");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not in order");
    for i in 0..2500 {
        assert!(unique.contains(&format!("dev-{i:05}")), "gap at {i}");
    }
}

/// GET and PATCH answer with an ETag; a PATCH with If-Match applies only
/// to that version (412 otherwise), for devices and tenants alike.
async fn if_match_guards_updates(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    t.device("acme", "d1").await;
    for (uri, change, other) in [
        (
            "/v1/tenants/acme/devices/d1",
            json!({"labels": {"site": "berlin"}}),
            json!({"enabled": false}),
        ),
        (
            "/v1/tenants/acme",
            json!({"name": "Acme 2"}),
            json!({"name": "Acme 3"}),
        ),
    ] {
        let read = t.get(uri, a).await.expect(200);
        let etag = read.headers[http::header::ETAG]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        // Unchanged: same tag on every read.
        let again = t.get(uri, a).await.expect(200);
        assert_eq!(again.headers[http::header::ETAG], etag.as_str());

        let patch = |body: &Value, if_match: &str| {
            let mut headers = vec![("content-type", "application/merge-patch+json")];
            if !if_match.is_empty() {
                headers.push(("if-match", if_match));
            }
            let mut req = request(Method::PATCH, uri, Some(a), None, &headers);
            *req.body_mut() = axum::body::Body::from(body.to_string());
            t.send(req)
        };
        // The right tag: applied, and a new tag comes back.
        let updated = patch(&change, &etag).await.expect(200);
        let new_tag = updated.headers[http::header::ETAG]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(new_tag, etag);
        let read = t.get(uri, a).await.expect(200);
        assert_eq!(read.headers[http::header::ETAG], new_tag.as_str());
        // The old tag (someone else changed it meanwhile): 412, unchanged.
        patch(&other, &etag)
            .await
            .problem(412, "precondition-failed");
        assert_eq!(t.fetch(uri, a).await, read.body);
        // Weak tags never match; `*` and lists do; no If-Match is fine.
        patch(&other, &format!("W/{new_tag}"))
            .await
            .problem(412, "precondition-failed");
        let listed = patch(&other, &format!("\"nope\", {new_tag}"))
            .await
            .expect(200);
        patch(&change, "*").await.expect(200);
        patch(&other, "").await.expect(200);
        assert_ne!(listed.body, Value::Null);
    }
    // A missing resource is still 404, whatever If-Match says.
    let req = request(
        Method::PATCH,
        "/v1/tenants/acme/devices/ghost",
        Some(a),
        None,
        &[
            ("content-type", "application/merge-patch+json"),
            ("if-match", "*"),
        ],
    );
    let mut req = req;
    *req.body_mut() = axum::body::Body::from("{}");
    t.send(req).await.problem(404, "not-found");
}

/// U+0000 in attributes is refused on both backends alike (PostgreSQL's
/// jsonb cannot store it), with the pointer of the string or key.
async fn nul_in_attributes_is_422(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    t.post(
        DEVICES,
        &t.admin,
        json!({"id": "n1", "attributes": {"a": ["ok", {"b": "x\0y"}]}}),
    )
    .await
    .invalid_at("/attributes/a/1/b");
    t.post(
        DEVICES,
        &t.admin,
        json!({"id": "n1", "attributes": {"k\0": 1}}),
    )
    .await
    .invalid_at("/attributes/k\0");
    t.device("acme", "n1").await;
    t.patch(
        &format!("{DEVICES}/n1"),
        &t.admin,
        json!({"attributes": {"z": "\0"}}),
    )
    .await
    .invalid_at("/attributes/z");
}

/// A device's notes: any role reads them, operator and up add them, each
/// signed and audited; bad text is 422; a device keeps its newest 100 and
/// its notes go with it.
async fn device_notes(db: &TestDb) {
    use api::Role;
    let t = TestApp::with_tenants(db, &["acme"]).await;
    t.device("acme", "d1").await;
    let url = "/v1/tenants/acme/devices/d1/notes";
    let viewer = t.token(Role::Viewer, "acme");
    let op = t.token(Role::Operator, "acme");
    assert_eq!(t.fetch(url, &viewer).await, json!({"items": []}));
    let note = json!({"text": "battery replaced"});
    t.post(url, &viewer, note.clone())
        .await
        .problem(403, "forbidden");
    let added = t.post(url, &op, note).await.expect(201).body;
    assert_eq!(added["text"], "battery replaced");
    assert_eq!(added["author"], "operator:tester");
    assert!(added["created_at"].is_string());
    for bad in [String::new(), "x".repeat(2001), "a\0b".to_owned()] {
        t.post(url, &op, json!({ "text": bad }))
            .await
            .invalid_at("/text");
    }
    let ghost = "/v1/tenants/acme/devices/ghost/notes";
    t.get(ghost, &viewer).await.problem(404, "not-found");
    t.post(ghost, &op, json!({"text": "x"}))
        .await
        .problem(404, "not-found");
    t.assert_audited("/v1/tenants/acme/audit", &["device.note.add"])
        .await;

    // Newest first, and only the newest 100 are kept.
    for n in 1..=100 {
        t.post(url, &op, json!({ "text": format!("note {n}") }))
            .await
            .expect(201);
    }
    let items = t.fetch(url, &viewer).await["items"].clone();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["text"], "note 100");
    assert_eq!(items[99]["text"], "note 1");

    // The notes go with their device.
    t.delete("/v1/tenants/acme/devices/d1", &op)
        .await
        .expect(204);
    t.device("acme", "d1").await;
    assert_eq!(t.fetch(url, &viewer).await, json!({"items": []}));
}

store::backend_tests!(
    device_notes,
    nul_in_attributes_is_422,
    device_crud,
    device_validation,
    device_filters,
    paging_while_adding,
    if_match_guards_updates
);
