//! Loading never panics, whatever the text: every input yields a configuration or
//! diagnostics, and every diagnostic points inside the file.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example_texts() -> Vec<String> {
    [
        "all-in-one",
        "dedicated-lb",
        "split-forwarder-classifier",
        "request-router",
    ]
    .iter()
    .filter_map(|name| std::fs::read_to_string(examples_dir().join(format!("{name}.toml"))).ok())
    .collect()
}

/// Loads `text` as if it sat in the examples directory and checks the diagnostics' shape.
fn check(text: &str) -> Result<(), TestCaseError> {
    let origin = examples_dir().join("mutated.toml");
    if let Err(diagnostics) = switchyard_config::load_str(text, &origin) {
        prop_assert!(!diagnostics.is_empty());
        let lines = text.lines().count().max(1);
        for d in &diagnostics {
            prop_assert!(
                d.line >= 1 && d.line <= lines + 1,
                "line {} of {lines}: {d}",
                d.line
            );
            prop_assert!(d.column >= 1, "{d}");
            prop_assert!(!d.message.is_empty(), "{d}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        check(&text)?;
    }

    #[test]
    fn example_with_a_line_removed_or_repeated_never_panics(
        which in 0usize..4,
        line in any::<prop::sample::Index>(),
        repeat in any::<bool>(),
    ) {
        let texts = example_texts();
        prop_assume!(!texts.is_empty());
        let text = &texts[which % texts.len()];
        let mut lines: Vec<&str> = text.lines().collect();
        let i = line.index(lines.len());
        if repeat {
            lines.insert(i, lines[i]);
        } else {
            lines.remove(i);
        }
        check(&lines.join("\n"))?;
    }

    #[test]
    fn example_with_a_value_replaced_never_panics(
        which in 0usize..4,
        line in any::<prop::sample::Index>(),
        value in prop_oneof![
            Just("\"\"".to_owned()),
            Just("0".to_owned()),
            Just("-1".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just("true".to_owned()),
            Just("\"[::1]:0\"".to_owned()),
            Just("99999999999999999999".to_owned()),
            "\"\\PC{0,12}\"",
        ],
    ) {
        let texts = example_texts();
        prop_assume!(!texts.is_empty());
        let text = &texts[which % texts.len()];
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let i = line.index(lines.len());
        if let Some((key, _)) = lines[i].split_once(" = ") {
            lines[i] = format!("{key} = {value}");
        }
        check(&lines.join("\n"))?;
    }
}
