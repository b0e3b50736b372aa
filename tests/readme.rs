//! The README's examples are tests: every ```console block of README.md is
//! run in order by `trycmd` and its output (stdout and stderr together) and
//! exit code compared with what the block shows, so the README cannot drift
//! from the tool.
//!
//! What runs: blocks fenced as ```console (or ```trycmd, or with no
//! language). What does not, by their fence: ```sh (the first `cargo run
//! --release ...` and the CI example, which `tests/ci_commands.rs` runs),
//! ```python, ```json, ```text (usage synopsis, the module diagram). Keep a
//! new example that cannot run here (a benchmark on generated multi-GB
//! files, a Python snippet) out of ```console for the same reason.
//!
//! Where: a temporary folder holding a copy of README.md and, as the
//! commands' working folder, `README.in/` with a copy of `fixtures/`, so
//! paths in the README are relative to the repository's root as a reader
//! would type them, files one example writes are there for the next, and
//! nothing is written into the repository (not even next to a fixture).
//!
//! Besides `keras2safetensors`, the examples may call `cp`, `truncate` and
//! `ls`, to make the damaged inputs of the error examples and to list a
//! shard folder. The progress bar is drawn only when stderr is a terminal,
//! so it is not in the output compared.

use std::path::{Path, PathBuf};

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `name` as found on PATH, as a shell would run it.
fn system_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH"))
}

#[test]
fn readme_examples_print_what_the_readme_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("README.md");
    std::fs::copy(root.join("README.md"), &readme).unwrap();
    // trycmd passes a file with nothing to run; the README must have some.
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("$ keras2safetensors ")),
        "README.md has no console example to run"
    );
    copy_tree(
        &root.join("fixtures"),
        &dir.path().join("README.in/fixtures"),
    );

    trycmd::TestCases::new()
        .register_bin(
            "keras2safetensors",
            Path::new(env!("CARGO_BIN_EXE_keras2safetensors")),
        )
        .register_bin("cp", system_tool("cp"))
        .register_bin("truncate", system_tool("truncate"))
        .register_bin("ls", system_tool("ls"))
        // `ls` sorts by the locale's collation; the README's order is C's.
        .env("LC_ALL", "C")
        .case(&readme)
        .run();
}
