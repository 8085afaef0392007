//! Feeds the committed fuzz seed corpus through the same checks as the fuzz
//! targets, so stable CI exercises it.

use std::path::PathBuf;

use switchyard_wire::Family;

use crate::{check_canonical, fuzz_codec};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

#[test]
fn family_corpora_decode_canonically() {
    for &family in Family::ALL {
        let kinds = family.kinds();
        let mut decoded = 0;
        for (path, bytes) in files(family.name()) {
            let Some((&selector, payload)) = bytes.split_first() else {
                continue;
            };
            let kind = kinds[usize::from(selector) % kinds.len()];
            check_canonical(kind, payload);
            if switchyard_wire::Message::decode_payload(kind, payload).is_ok() {
                decoded += 1;
            } else {
                eprintln!("{}: does not decode (allowed)", path.display());
            }
        }
        assert!(
            decoded >= kinds.len(),
            "{}: too few valid seeds",
            family.name()
        );
    }
}

#[test]
fn frame_corpus_opens() {
    let codec = fuzz_codec();
    let mut opened = 0;
    for (_, bytes) in files("frame") {
        if codec.open(&bytes).is_ok() {
            opened += 1;
        }
    }
    assert!(opened > 0, "no frame seed opens with the fuzz key");
}
