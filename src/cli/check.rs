//! `verify`, `diff`, `manifest` and `check`: answers for CI.

use std::path::PathBuf;

use serde::Serialize;

use keras2safetensors::cancel;
use keras2safetensors::compare::{self, Report, Tolerance};
use keras2safetensors::export::PlanOptions;
use keras2safetensors::files::{self, FileId};
use keras2safetensors::manifest::{self, Difference};
use keras2safetensors::tensors::TensorFile;
use keras2safetensors::{Error, Result};

use super::{print_json, print_out, Outcome, ReadArgs};

/// Check that a conversion kept every weight.
///
/// Every weight of SOURCE (any Keras format) must be in CONVERTED (a
/// safetensors file or a sharded index) under the name `convert` gives it,
/// with the bytes `convert` writes; a PyTorch-layout or cast conversion is
/// checked after the same transform (read from CONVERTED's metadata).
/// Exit code 0 when everything matches, 1 otherwise.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors verify model.h5 model.safetensors
  keras2safetensors verify model.h5 out_pt/model.safetensors.index.json --json")]
pub struct VerifyArgs {
    /// The Keras file that was converted.
    source: PathBuf,
    /// The conversion: a safetensors file or a sharded save's index.
    converted: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    read: ReadArgs,
}

/// Compare the tensors of any two files.
///
/// Keras files are compared under their Keras-layout names. Reports tensors
/// only in A or only in B, dtype or shape changes, and for the rest whether
/// the bytes are equal and else the largest absolute and relative
/// difference. Exit code 0 when every value matches within
/// `|a - b| <= atol + rtol * |b|` (NaN matches NaN), 1 otherwise.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors diff old.safetensors new.safetensors
  keras2safetensors diff model.h5 model_f16.safetensors --atol 1e-3
  keras2safetensors diff a.keras b.weights.h5 --json")]
pub struct DiffArgs {
    /// The first file: any Keras format or safetensors.
    a: PathBuf,
    /// The second file, compared against the first.
    b: PathBuf,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 0.0)]
    atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 0.0)]
    rtol: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    read: ReadArgs,
}

/// Write a file's tensor names, shapes, dtypes and sha256 as JSON.
///
/// The manifest is stable (sorted keys, no timestamps), so it diffs well in
/// code review. Commit it beside a fixture and run `check` in CI.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors manifest model.h5 -o model.manifest.json
  keras2safetensors manifest model.safetensors")]
pub struct ManifestArgs {
    /// The file to describe: any Keras format or safetensors.
    file: PathBuf,
    /// Where to write (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
}

/// Check a file against a manifest: exit 0 when it matches, 1 with the
/// list of differences otherwise.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors check model.h5 --manifest model.manifest.json
  keras2safetensors check model.safetensors --manifest model.manifest.json --json")]
pub struct CheckArgs {
    /// The file to check: any Keras format or safetensors.
    file: PathBuf,
    /// The manifest `manifest` wrote for the file.
    #[arg(long, value_name = "MANIFEST_JSON")]
    manifest: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    read: ReadArgs,
}

fn outcome(ok: bool) -> Outcome {
    if ok {
        Outcome::Success
    } else {
        Outcome::Mismatch
    }
}

fn report_text(report: &Report, what: &str) -> String {
    let mut out = String::new();
    for name in &report.only_in_a {
        out.push_str(&format!("only in {}: {name}\n", report.a));
    }
    for name in &report.only_in_b {
        out.push_str(&format!("only in {}: {name}\n", report.b));
    }
    for c in &report.changed {
        out.push_str(&format!(
            "changed: {}: {} -> {}\n",
            c.name,
            c.a.as_deref().unwrap_or("?"),
            c.b.as_deref().unwrap_or("?")
        ));
    }
    for c in &report.different {
        out.push_str(&format!(
            "differs: {}: max abs {:e}, max rel {:e}\n",
            c.name,
            c.max_abs.unwrap_or(0.0),
            c.max_rel.unwrap_or(0.0)
        ));
    }
    out.push_str(&format!(
        "{}: {} tensors equal, {} only in A, {} only in B, {} changed, {} differ{}\n",
        if report.ok { "OK" } else { "MISMATCH" },
        report.equal,
        report.only_in_a.len(),
        report.only_in_b.len(),
        report.changed.len(),
        report.different.len(),
        what
    ));
    out
}

pub fn verify(args: VerifyArgs) -> Result<Outcome> {
    let report = compare::verify(&args.source, &args.converted, &args.read.options())?;
    cancel::check(&args.source)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_out(&report_text(&report, ""))?;
    }
    Ok(outcome(report.ok))
}

pub fn diff(args: DiffArgs) -> Result<Outcome> {
    let tolerance = Tolerance {
        atol: args.atol,
        rtol: args.rtol,
    };
    let report = compare::diff(&args.a, &args.b, &args.read.options(), tolerance)?;
    cancel::check(&args.a)?;
    if args.json {
        print_json(&report)?;
    } else {
        let within = if report.different.is_empty() {
            String::new()
        } else {
            format!(" (atol {}, rtol {})", args.atol, args.rtol)
        };
        print_out(&report_text(&report, &within))?;
    }
    Ok(outcome(report.ok))
}

pub fn manifest(args: ManifestArgs) -> Result<Outcome> {
    let file = TensorFile::open(&args.file, &args.read.options(), &PlanOptions::default())?;
    let text = manifest::to_text(&manifest::build(&args.file, &file)?);
    cancel::check(&args.file)?;
    match &args.output {
        Some(path) => {
            // Written over as before, but never the file described, nor a
            // pipe or a device.
            let inputs: Vec<FileId> = FileId::of_path(&args.file).into_iter().collect();
            files::check_writable(path, &inputs)?;
            std::fs::write(path, text).map_err(|e| Error::new(path, e.into()))?
        }
        None => print_out(&text)?,
    }
    Ok(Outcome::Success)
}

/// What `check --json` prints.
#[derive(Serialize)]
struct CheckReport {
    file: String,
    manifest: String,
    ok: bool,
    differences: Vec<Difference>,
}

pub fn check(args: CheckArgs) -> Result<Outcome> {
    let expected = manifest::load(&args.manifest)?;
    let file = TensorFile::open(&args.file, &args.read.options(), &PlanOptions::default())?;
    let actual = manifest::build(&args.file, &file)?;
    cancel::check(&args.file)?;
    let differences = manifest::compare(&expected, &actual);
    let report = CheckReport {
        file: args.file.display().to_string(),
        manifest: args.manifest.display().to_string(),
        ok: differences.is_empty(),
        differences,
    };
    if args.json {
        print_json(&report)?;
    } else {
        let mut out = String::new();
        for d in &report.differences {
            out.push_str(&format!("{}: {}\n", d.name, d.problem));
        }
        out.push_str(&if report.ok {
            format!(
                "OK: {} matches {} ({} tensors)\n",
                report.file,
                report.manifest,
                actual.tensors.len()
            )
        } else {
            format!(
                "MISMATCH: {} differs from {} in {} ways\n",
                report.file,
                report.manifest,
                report.differences.len()
            )
        });
        print_out(&out)?;
    }
    Ok(outcome(report.ok))
}
