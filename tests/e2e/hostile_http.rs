//! Hostile HTTP clients through the real binary (issue 13, item 5): a
//! client trickling half a request's headers (slowloris) and a client
//! idling on a kept-alive connection are both closed after
//! `--http-header-timeout`; with the open-file limit low (`prlimit` on the
//! child) and hundreds of silent HTTP sockets, the HTTP cap refuses every
//! excess connection (503 problem+json while 64 such answers are in
//! flight, closed past that) and MQTT clients still connect, and the
//! server warns that its connection caps do not fit the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetmq_tests::{Server, fleetmq_bin, start_anonymous};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; what it sent, and when.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(String, Instant)> {
    let mut got = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
        Ok(_) => Some((String::from_utf8_lossy(&got).into_owned(), Instant::now())),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slowloris_and_idle_connections_are_closed() {
    let cwd = tempfile::tempdir().unwrap();
    let server = start_anonymous(cwd.path(), &["--http-header-timeout", "2"])
        .await
        .unwrap();
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One more header byte a second, never the blank line.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if slow.write_all(b"X").await.is_err() {
                return;
            }
        }
    };
    trickle.await;
    let closed = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "a slowloris client is still connected after {:?}",
        started.elapsed()
    );

    let mut idle = TcpStream::connect(server.http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, at) = until_closed(&mut idle, Duration::from_secs(15))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    println!(
        "idle connection closed {:?} after connecting",
        at.duration_since(started)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_file_limit_low_http_is_capped_and_mqtt_still_connects() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("prlimit");
    cmd.arg("--nofile=300:300")
        .arg(fleetmq_bin())
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--allow-anonymous",
            "interop",
        ])
        .args([
            "--http-max-connections",
            "100",
            "--http-header-timeout",
            "60",
        ])
        .current_dir(cwd.path())
        .kill_on_drop(true)
        .stdin(Stdio::null());
    for key in [
        "FLEETMQ_MQTT_LISTEN",
        "FLEETMQ_MQTTS_LISTEN",
        "FLEETMQ_WS_LISTEN",
    ] {
        cmd.env(key, "127.0.0.1:0");
    }
    let mut server = Server::start(cmd).await.unwrap();

    // 250 sockets that never send a byte (the limit is 300 descriptors).
    let mut silent = Vec::new();
    for _ in 0..250 {
        silent.push(TcpStream::connect(server.http).await.unwrap());
    }
    // The excess is refused at accept: with a 503 problem+json while at
    // most 64 such answers are being written (MAX_REFUSALS_IN_FLIGHT in
    // the api crate's server), closed at once past that, so that answering
    // never becomes a resource of its own. Every socket is read at once,
    // each for up to 3 s; the admitted ones stay silent (60 s header
    // timeout).
    #[derive(PartialEq)]
    enum Seen {
        Refused503,
        Closed,
        Silent,
    }
    let seen = futures::future::join_all(silent.iter_mut().map(|socket| async move {
        let mut byte = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(3), socket.read(&mut byte)).await {
            Ok(Ok(n)) if String::from_utf8_lossy(&byte[..n]).starts_with("HTTP/1.1 503") => {
                Seen::Refused503
            }
            Ok(_) => Seen::Closed,
            Err(_) => Seen::Silent,
        }
    }))
    .await;
    let count = |what: Seen| seen.iter().filter(|s| **s == what).count();
    let (refused, closed, admitted) = (
        count(Seen::Refused503),
        count(Seen::Closed),
        count(Seen::Silent),
    );
    println!(
        "250 silent sockets: {admitted} admitted, {refused} refused with 503, {closed} closed"
    );
    assert!(
        admitted <= 100,
        "{admitted} admitted past --http-max-connections 100"
    );
    assert_eq!(refused + closed, 150, "every excess connection is refused");
    assert!(
        refused >= 64,
        "only {refused} of 150 excess connections were refused with 503"
    );

    // An MQTT client still gets in.
    let mut opts = rumqttc::MqttOptions::new("still-in", "127.0.0.1", server.mqtt().port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    })
    .await
    .expect("CONNACK in time");
    assert!(
        connack.is_ok(),
        "MQTT refused while HTTP was flooded: {connack:?}"
    );

    drop(silent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_connections_refused_total{reason=\"max_connections\"}")),
        "no refusal metric:\n{metrics}"
    );
    let stderr = server.drain_stderr().join("\n");
    assert!(
        stderr.contains("do not fit the open-file limit"),
        "no warning about the file limit:\n{stderr}"
    );
    server.stop().await.unwrap();
}
