//! What one allotment costs on the consumer's hot path and on the unit.
//!
//! - `token_draw/N` and `percentage_draw/N`: one `draw` from an allotment
//!   over N endpoints — what a classifier or request router pays per new
//!   connection. Both scan every entry, so the cost grows with N.
//! - `token_draw_with_clock/3`: the same plus the `Instant::now()` a real
//!   consumer reads per draw (it passes `now` to `draw`).
//! - `allot_tokens/N` and `allot_percentages/N`: a unit issuing one
//!   allotment for a service with N endpoints from its consolidated cache
//!   (liveness lookup per endpoint, spare capacity, largest-remainder split,
//!   the response's allocation) — paid once per allotment, not per draw.
//!
//! Run: `cargo bench -p switchyard-health --bench allotment` (or
//! `bench/health.sh`); `cargo test` runs each case once as a smoke test.
//! Results and how to read them: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard_health::{
    CacheSettings, ConsolidatedCache, PercentageAllotment, TokenAllotment, Transmit,
};
use switchyard_wire::allotment::{Allotment, AllotmentRequest, AllotmentResponse, AllotmentScheme};
use switchyard_wire::health::{
    AppStatus, ContentCheck, Directive, DirectiveState, Health, Heartbeat, Row, SendTableSnapshot,
};
use switchyard_wire::{AppId, HostId, Message, Protocol, SenderId, UnitId};

const VIP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 80));

/// Endpoint `i`'s row: healthy, active, capacity 50 and a load spread over
/// 0..90 % so the weights differ (equal weights would flatter nothing, but
/// real services are uneven).
fn row(i: usize) -> Row {
    let octets = u32::try_from(i).expect("small index").to_be_bytes();
    let load = u8::try_from(i * 37 % 90).expect("below 90");
    Row {
        app: AppId {
            vip: VIP,
            protocol: Protocol::Tcp,
            endpoint: SocketAddr::from(([10, octets[1], octets[2], octets[3]], 8080)),
            info: String::new(),
        },
        status: AppStatus::new(Health::Healthy, load, 50).expect("valid status"),
        directive: Directive {
            target: DirectiveState::Active,
            current: DirectiveState::Active,
        },
    }
}

fn drain(cache: &mut ConsolidatedCache) -> Vec<Transmit<SenderId>> {
    std::iter::from_fn(|| cache.poll_transmit()).collect()
}

/// A unit's cache holding `n` hosts with one endpoint each of the same
/// service, every host in sync (heartbeat, snapshot, heartbeat), as the
/// protocol would leave it.
fn cache_with(n: usize, now: Instant) -> ConsolidatedCache {
    let mut cache = ConsolidatedCache::new(CacheSettings::new(UnitId(1)), now).expect("settings");
    for i in 0..n {
        let host = HostId(1000 + u32::try_from(i).expect("small index"));
        let from = SenderId::from(host);
        let heartbeat = |digest| {
            Message::from(Heartbeat {
                host,
                check: ContentCheck::Table {
                    generation: 1,
                    digest,
                },
                name: None,
                address: None,
                forward: false,
            })
        };
        cache.handle(now, from, &heartbeat(0)).expect("heartbeat");
        drain(&mut cache);
        let snapshot = Message::from(SendTableSnapshot {
            host,
            generation: 1,
            part: 0,
            parts: 1,
            rows: vec![row(i)],
        });
        cache.handle(now, from, &snapshot).expect("snapshot");
        let digest = cache.host(host).expect("cached").table.digest();
        cache
            .handle(now, from, &heartbeat(digest))
            .expect("heartbeat");
        drain(&mut cache);
    }
    cache
}

fn request(scheme: AllotmentScheme, wanted_tokens: u32) -> AllotmentRequest {
    AllotmentRequest {
        request_id: 1,
        vip: VIP,
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme,
        wanted_tokens,
    }
}

/// An allotment over `n` endpoints; tokens as many as fit, so a benchmark
/// run rarely exhausts them (it refills when it does).
fn allotment_over(n: usize, scheme: AllotmentScheme, now: Instant) -> AllotmentResponse {
    let mut cache = cache_with(n, now);
    let response = cache.allot(&request(scheme, u32::MAX), now);
    let granted = match &response.allotment {
        Allotment::Tokens { entries, .. } => entries.len(),
        Allotment::Percentages { entries, .. } => entries.len(),
    };
    assert_eq!(granted, n, "every healthy endpoint gets a share");
    response
}

fn draws(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("token_draw");
    for n in [3, 32] {
        let response = allotment_over(n, AllotmentScheme::Tokens, now);
        let fresh = TokenAllotment::new(&response, now).expect("tokens");
        let mut tokens = fresh.clone();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| match tokens.draw(black_box(now)) {
                Some(endpoint) => endpoint,
                None => {
                    tokens = fresh.clone();
                    tokens.draw(now).expect("fresh tokens")
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("token_draw_with_clock");
    let response = allotment_over(3, AllotmentScheme::Tokens, now);
    let fresh = TokenAllotment::new(&response, now).expect("tokens");
    let mut tokens = fresh.clone();
    // Valid for 2 s from `now`: renew whenever it runs out or goes stale,
    // as a classifier would (the renewal is rare and included).
    group.bench_function("3", |b| {
        b.iter(|| match tokens.draw(Instant::now()) {
            Some(endpoint) => endpoint,
            None => {
                let now = Instant::now();
                tokens = TokenAllotment::new(&response, now).expect("tokens");
                tokens.draw(now).expect("fresh tokens")
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("percentage_draw");
    for n in [3, 32] {
        let response = allotment_over(n, AllotmentScheme::Percentages, now);
        let mut shares = PercentageAllotment::new(&response, now).expect("percentages");
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| shares.draw(black_box(now)).expect("not expired"))
        });
    }
    group.finish();
}

fn allots(c: &mut Criterion) {
    let now = Instant::now();
    for (name, scheme) in [
        ("allot_tokens", AllotmentScheme::Tokens),
        ("allot_percentages", AllotmentScheme::Percentages),
    ] {
        let mut group = c.benchmark_group(name);
        for n in [3, 100, 1000] {
            let mut cache = cache_with(n, now);
            let request = request(scheme, 0);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| cache.allot(black_box(&request), now))
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    // Shorter than criterion's default 5 s per case: 12 cases on a shared
    // 2-core machine; 2 s still gives tight intervals for nanosecond work.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = draws, allots
}
criterion_main!(benches);
