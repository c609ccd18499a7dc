//! Sizes one person can hold in mind: no source file over 400 lines outside the tests, and no
//! function of the app crate over 80 lines: `cargo test -p xtask --test code_size`.

mod common;

use std::path::Path;

use common::{PACKAGES, rust_files, strip, workspace};

const MAX_FILE_LINES: usize = 400;
const MAX_APP_FUNCTION_LINES: usize = 80;

/// Whether `path` holds tests: an integration test, or a unit-test module file.
fn is_test(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests") || path.file_name().is_some_and(|n| n == "tests.rs")
}

#[test]
fn no_source_file_is_over_400_lines() {
    let mut long = Vec::new();
    for package in PACKAGES {
        for file in rust_files(&workspace().join(package)).into_iter().filter(|f| !is_test(f)) {
            let lines = std::fs::read_to_string(&file).expect("read").lines().count();
            if lines > MAX_FILE_LINES {
                long.push(format!("{}: {lines} lines", file.display()));
            }
        }
    }
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines:\n{}", long.join("\n"));
}

/// Each function of `code` (comments and literals stripped): its name, first line and length in
/// lines, from `fn` to its closing brace.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ").filter(|&at| at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric())
        else {
            continue;
        };
        let name: String = line[at + 3..].chars().take_while(|&c| common::is_ident(c)).collect();
        if name.is_empty() {
            continue;
        }
        // The body opens at the first `{` after the signature (a `;` first: no body).
        let (mut depth, mut opened) = (0i32, false);
        'scan: for (j, l) in lines.iter().enumerate().skip(i) {
            let from = if j == i { at } else { 0 };
            for c in l[from..].chars() {
                match c {
                    ';' if !opened => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
                if opened && depth == 0 {
                    out.push((name.clone(), i + 1, j - i + 1));
                    break 'scan;
                }
            }
        }
    }
    out
}

#[test]
fn no_app_function_is_over_80_lines() {
    let mut long = Vec::new();
    for file in rust_files(&workspace().join("crates/llama-app/src")).into_iter().filter(|f| !is_test(f)) {
        let code = strip(&std::fs::read_to_string(&file).expect("read"));
        for (name, line, lines) in functions(&code) {
            if lines > MAX_APP_FUNCTION_LINES {
                long.push(format!("{}:{line}: fn {name}: {lines} lines", file.display()));
            }
        }
    }
    assert!(long.is_empty(), "app functions over {MAX_APP_FUNCTION_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_function_measure_counts_from_fn_to_its_brace() {
    let code = "fn a() {\n    let x = { 1 };\n}\ntrait T { fn b(&self); }\nfn c(\n    y: u8,\n) -> u8 {\n    y\n}\n";
    assert_eq!(functions(code), [("a".to_string(), 1, 3), ("c".to_string(), 5, 5)]);
}
