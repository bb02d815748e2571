//! Back-pressure in process (issue 16): a burst of many publishers into
//! one subscriber whose queue holds a hundredth of it is slowed, not
//! dropped. Clients: rumqttc 3.1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use broker::Config;
use common::{TestBroker, WAIT, tenant, v4_client};

const PUBLISHERS: usize = 20;
const EACH: usize = 500;

async fn burst_into_one_subscriber(qos: rumqttc::QoS) {
    let config = Config {
        max_queued_messages: 100,
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    let (sink, mut rx, _task) = v4_client(b.port(), "sink", true);
    sink.subscribe("burst/#", qos).await.unwrap();
    common::v4_suback(&mut rx).await;
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        // Its packets are kept (not read): the event loop stops when
        // nobody takes them.
        let (client, acks, task) = v4_client(b.port(), &format!("pub-{i}"), true);
        for n in 0..EACH {
            client
                .publish(format!("burst/{i}"), qos, false, n.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
        publishers.push((client, acks, task));
    }
    let total = PUBLISHERS * EACH;
    let mut received = 0;
    tokio::time::timeout(WAIT * 8, async {
        while received < total {
            if let Some(rumqttc::Packet::Publish(_)) = rx.recv().await {
                received += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("received {received} of {total}"));
    let drops = b.broker.session_drops(&tenant("dev"), "sink").unwrap();
    assert_eq!(drops, broker::DropCounters::default());
    b.stop().await;
}

#[tokio::test]
async fn a_qos0_burst_into_a_small_queue_loses_nothing() {
    burst_into_one_subscriber(rumqttc::QoS::AtMostOnce).await;
}

#[tokio::test]
async fn a_qos1_burst_into_a_small_queue_loses_nothing() {
    burst_into_one_subscriber(rumqttc::QoS::AtLeastOnce).await;
}
