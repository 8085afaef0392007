//! Hosts appear, change, say goodbye and age out, as `/v1/hosts` shows.

use std::time::{Duration, Instant};

use switchyard_lb::admin::api::CountersResponse;
use switchyard_wire::health::{AppStatus, DirectiveState, Health};

use crate::harness::*;

#[tokio::test]
async fn hosts_appear_with_their_rows_and_a_health_change_shows_within_a_second() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let control = unit.control_addr().expect("health role");
    let mut agents = Vec::new();
    for (i, id) in [101u32, 102, 103].into_iter().enumerate() {
        let host = TestHost::start(id, control).await;
        let port = 8081 + i as u16;
        host.set(app(port), healthy(20, 50)).await;
        agents.push(host);
    }
    let doc = wait_for_hosts(&unit, &[101, 102, 103], 1).await;
    assert_eq!(doc.unit.name, "lb-1");
    // The forwarder has no interfaces configured here, so it does not start; the classifier
    // does (it needs no privileges).
    assert_eq!(
        doc.unit.running,
        vec!["health-cache".to_owned(), "classifier".to_owned()]
    );
    let web1 = &doc.hosts[0];
    assert_eq!(web1.name.as_deref(), Some("host-101.test"));
    assert!(web1.address.is_some_and(|a| a.ip().is_loopback()));
    assert!(web1.alive);
    assert!(web1.last_heartbeat_ms < 1000, "{web1:?}");
    let row = &web1.rows[0];
    assert_eq!(row.vip, VIP.parse().expect("vip"));
    assert_eq!(row.protocol, "tcp");
    assert_eq!(row.endpoint.port(), 8081);
    assert_eq!(
        (row.health.as_str(), row.load, row.capacity),
        ("healthy", 20, 50)
    );
    assert_eq!(
        (row.target.as_str(), row.current.as_str()),
        ("active", "active")
    );
    assert_eq!(row.handshake, "complete");
    // Three equal endpoints share 100 tokens.
    let tokens: u32 = doc.hosts.iter().map(|h| h.rows[0].tokens).sum();
    assert_eq!(tokens, 100);

    // The application on web-2 starts failing.
    let changed = Instant::now();
    agents[1]
        .set(
            app(8082),
            AppStatus::new(Health::Failing, 20, 50).expect("status"),
        )
        .await;
    let doc = eventually(WAIT, "failing shown", || async {
        let doc = hosts(&unit).await;
        (doc.hosts[1].rows[0].health == "failing").then_some(doc)
    })
    .await;
    // How fast is the benchmark's business (docs/BENCHMARKS.md); here it is only shown.
    println!("failing shown after {:?}", changed.elapsed());
    // A failing endpoint gets no tokens; the others share them.
    assert_eq!(doc.hosts[1].rows[0].tokens, 0);
    assert_eq!(
        doc.hosts[0].rows[0].tokens + doc.hosts[2].rows[0].tokens,
        100
    );

    // It recovers.
    agents[1].set(app(8082), healthy(20, 50)).await;
    eventually(WAIT, "healthy again", || async {
        let doc = hosts(&unit).await;
        (doc.hosts[1].rows[0].health == "healthy").then_some(())
    })
    .await;

    let counters: CountersResponse = get_json(&unit, "/v1/counters").await;
    assert_eq!(counters.state.hosts, 3);
    assert_eq!(counters.state.endpoints, 3);
    assert!(
        counters
            .cache
            .received
            .get("Heartbeat")
            .copied()
            .unwrap_or(0)
            >= 3
    );
    assert!(
        counters
            .cache
            .received
            .get("RowChange")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    assert!(counters.cache.snapshots_completed >= 3, "{counters:?}");
    assert_eq!(counters.transport.rejected_total, 0);
    unit.shutdown().await;
}

#[tokio::test]
async fn a_drain_handshake_completes_through_the_unit() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let host = TestHost::start(101, unit.control_addr().expect("health role")).await;
    host.set(app(8081), healthy(10, 50)).await;
    wait_for_hosts(&unit, &[101], 1).await;
    host.with(|m, now| {
        m.set_target(now, &app(8081), DirectiveState::Draining)
            .expect("drain")
    })
    .await;
    // The unit answers the postulate rounds; the host completes the
    // handshake and publishes current = draining.
    let doc = eventually(WAIT, "handshake complete", || async {
        let doc = hosts(&unit).await;
        let row = &doc.hosts[0].rows[0];
        (row.current == "draining").then_some(doc)
    })
    .await;
    let row = &doc.hosts[0].rows[0];
    assert_eq!(
        (row.target.as_str(), row.handshake.as_str()),
        ("draining", "complete")
    );
    assert_eq!(row.tokens, 0, "a draining endpoint gets no tokens");
    let counters: CountersResponse = get_json(&unit, "/v1/counters").await;
    assert!(counters.cache.postulate_replies >= 1);
    assert!(
        counters
            .cache
            .sent
            .get("PostulateWrong")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    unit.shutdown().await;
}

#[tokio::test]
async fn a_goodbye_clears_the_host_at_once() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let control = unit.control_addr().expect("health role");
    let leaving = TestHost::start(101, control).await;
    let staying = TestHost::start(102, control).await;
    leaving.set(app(8081), healthy(10, 50)).await;
    staying.set(app(8082), healthy(10, 50)).await;
    wait_for_hosts(&unit, &[101, 102], 1).await;
    let said = Instant::now();
    leaving.goodbye().await;
    eventually(WAIT, "host 101 cleared", || async {
        let doc = hosts(&unit).await;
        (doc.hosts.iter().map(|h| h.id).collect::<Vec<_>>() == [102]).then_some(())
    })
    .await;
    println!("host 101 cleared {:?} after its goodbye", said.elapsed());
    // Cleared by the goodbye, not by ageing out (5 s without heartbeats).
    let counters: CountersResponse = get_json(&unit, "/v1/counters").await;
    assert_eq!(counters.cache.goodbyes, 1);
    assert_eq!(counters.cache.age_outs, 0);
    // Its endpoint is gone from the service index too.
    let services: serde_json::Value = get_json(&unit, "/v1/services").await;
    let endpoints = services["services"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .len();
    assert_eq!(endpoints, 1, "{services}");
    staying.kill();
    unit.shutdown().await;
}

#[tokio::test]
async fn a_silent_host_ages_out() {
    let fixture = Fixture::new(HEALTH_ROLES, "400ms");
    let unit = fixture.start().await;
    let host = TestHost::start(101, unit.control_addr().expect("health role")).await;
    host.set(app(8081), healthy(10, 50)).await;
    wait_for_hosts(&unit, &[101], 1).await;
    let killed = Instant::now();
    host.kill();
    eventually(WAIT, "host aged out", || async {
        hosts(&unit).await.hosts.is_empty().then_some(())
    })
    .await;
    println!("aged out {:?} after the kill", killed.elapsed());
    // Not before host_dead_after (400 ms; the last heartbeat may be 100 ms older).
    assert!(
        killed.elapsed() >= Duration::from_millis(300),
        "aged out too early: {:?}",
        killed.elapsed()
    );
    let counters: CountersResponse = get_json(&unit, "/v1/counters").await;
    assert_eq!(counters.cache.age_outs, 1);
    assert_eq!(counters.cache.goodbyes, 0);
    unit.shutdown().await;
}
