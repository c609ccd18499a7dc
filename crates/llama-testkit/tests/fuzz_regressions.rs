//! Every input the fuzzers ever broke a reader with (committed under fuzz/regressions/<target>/)
//! and every seed they start from, run through the same bodies `cargo xtask fuzz` fuzzes: each
//! must end in an error or a value, never a panic.

use std::path::Path;

use llama_testkit::fuzz::{TARGETS, seeds};

#[test]
fn committed_fuzz_findings_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for (target, body) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("readable folder").path();
            eprintln!("replaying {}", path.display());
            body(&std::fs::read(&path).expect("readable input"));
            replayed += 1;
        }
    }
    eprintln!("{replayed} committed inputs replayed");
}

#[test]
fn fuzz_seeds_load_without_panics() {
    let seeds = seeds(&llama_app::cli::models_dir()).expect("the models from `cargo xtask setup`");
    for (target, _, bytes) in &seeds {
        let (_, body) = TARGETS.iter().find(|(name, _)| name == target).expect("a known target");
        body(bytes);
    }
    for (name, _) in TARGETS {
        assert!(seeds.iter().any(|(target, ..)| target == name), "no seed for {name}");
    }
}
