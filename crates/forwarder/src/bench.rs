//! Micro-benchmark support: the bare `XDP_TX` baseline program (`bpf/bench.bpf.c`), run with
//! `BPF_PROG_TEST_RUN` and `repeat`, so the forwarder's per-packet cost can be stated as a ratio
//! measured in the same run. Not used by the data plane itself.

use aya::Ebpf;
use aya::programs::Xdp;

use crate::dataplane::{RunResult, run_xdp_program};
use crate::error::Error;
use crate::program;

const BARE_PROG: &str = "sy_bare_tx";

/// The loaded baseline program.
#[derive(Debug)]
pub struct Baseline {
    bpf: Ebpf,
}

impl Baseline {
    /// Loads the bare XDP_TX program (root needed).
    pub fn load() -> Result<Baseline, Error> {
        let mut bpf = Ebpf::load(program::BENCH_BASELINE).map_err(|e| Error::Load(Box::new(e)))?;
        let p: &mut Xdp = bpf
            .program_mut(BARE_PROG)
            .ok_or(Error::Missing(BARE_PROG))?
            .try_into()
            .map_err(|e| Error::program("XDP program type", e))?;
        p.load()
            .map_err(|e| Error::program("load the baseline program", e))?;
        Ok(Baseline { bpf })
    }

    /// Runs the baseline `repeat` times on `frame`.
    pub fn run(&self, frame: &[u8], ingress_ifindex: u32, repeat: u32) -> Result<RunResult, Error> {
        let p: &Xdp = self
            .bpf
            .program(BARE_PROG)
            .ok_or(Error::Missing(BARE_PROG))?
            .try_into()
            .map_err(|e| Error::program("XDP program type", e))?;
        run_xdp_program(p, frame, ingress_ifindex, repeat)
    }
}
