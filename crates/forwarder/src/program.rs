//! The compiled BPF objects, embedded at build time (see `build.rs`).

/// `bpf/forwarder.bpf.c`: the forwarder's XDP (`sy_xdp`) and tc (`sy_tc`) programs and maps.
pub static FORWARDER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forwarder.bpf.o"));

/// `bpf/bench.bpf.c`: the bare XDP_TX baseline (`sy_bare_tx`) for micro-benchmarks.
pub static BENCH_BASELINE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));
