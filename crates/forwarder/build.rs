//! Compiles the forwarder's BPF programs (`bpf/forwarder.bpf.c`, and the benchmark baseline
//! `bpf/bench.bpf.c`) with clang for the BPF target into `OUT_DIR/*.bpf.o`, which `src/program.rs` embeds. Needs clang (14 or newer) and
//! the libbpf headers (`libbpf-dev`); set `CLANG` to use another compiler binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let header = manifest.join("bpf/forwarder.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    for name in ["forwarder", "bench"] {
        let src = manifest.join(format!("bpf/{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-Wall", "-Werror", "-target", "bpfel"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg(format!("-I{}", manifest.join("bpf").display()))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "clang failed ({s}) compiling {}; see the errors above",
                src.display()
            ),
            Err(e) => panic!(
                "cannot run `{clang}` to compile the forwarder's BPF program ({e}). \
                 Install clang and libbpf-dev (apt-get install clang libbpf-dev), or set CLANG."
            ),
        }
    }
}
