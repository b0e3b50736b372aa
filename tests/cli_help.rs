//! `--help` teaches: every subcommand ends with real examples and
//! describes every argument; shell completions print for bash, zsh, fish.

mod common;

use common::*;

const SUBCOMMANDS: &[&str] = &[
    "convert",
    "align",
    "inspect",
    "verify",
    "diff",
    "manifest",
    "check",
    "completions",
];

#[test]
fn every_subcommand_has_examples_and_described_arguments() {
    for sub in SUBCOMMANDS {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        let help = stdout(&out);
        let examples = help
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("{sub} --help has no examples:\n{help}"))
            .1;
        let lines: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            (2..=4).contains(&lines.len()),
            "{sub}: 2-4 examples, found {lines:?}"
        );
        for line in lines {
            assert!(
                line.trim_start()
                    .starts_with(&format!("keras2safetensors {sub} ")),
                "{sub}: an example runs the subcommand: {line}"
            );
        }
        // A positional argument's help line is `  <NAME>` followed by its
        // description on the next line (long help); none may be blank.
        let arguments = help
            .split_once("Arguments:\n")
            .map(|(_, rest)| rest.split_once("\n\nOptions:").map_or(rest, |(a, _)| a))
            .unwrap_or_default();
        let lines: Vec<&str> = arguments.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with('<') {
                let description = line.split_once('>').map(|(_, d)| d.trim()).unwrap_or("");
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                assert!(
                    !description.is_empty() || (!next.is_empty() && !next.starts_with('<')),
                    "{sub}: argument {line} has no description"
                );
            }
        }
    }
}

#[test]
fn completions_print_for_bash_zsh_and_fish() {
    for (shell, mark) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef keras2safetensors"),
        ("fish", "complete -c keras2safetensors"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(mark), "{shell}: {text:.200}");
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completes {sub}");
        }
        assert!(text.contains("allow-unclaimed"), "{shell} completes flags");
    }
}
