//! The API alone on a throwaway SQLite database, for poking at it by hand
//! or with schemathesis:
//!
//! ```sh
//! cargo run -p api --example dev_server -- 127.0.0.1:8080
//! # prints a platform-admin token, then serves until Ctrl-C
//! schemathesis run http://127.0.0.1:8080/openapi.json -H "Authorization: Bearer $TOKEN"
//! ```

use std::time::Duration;

use api::{AppState, HttpLimits, Keys, Role};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let dir = tempfile::tempdir()?;
    let store = store::Store::open(&store::sqlite_url(&dir.path().join("dev.db"))).await?;
    store.migrate().await?;
    let keys = Keys::load_or_create(&store).await?;
    let token = keys.issue(Role::PlatformAdmin, None, Duration::from_secs(24 * 3600))?;
    let state = AppState::new(store, api::install_metrics_recorder()?).with_keys(keys);
    let app = api::router(state, &HttpLimits::default());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("TOKEN={token}");
    api::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
