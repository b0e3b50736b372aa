//! `convert`: one file, or many in parallel.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use keras2safetensors::export::{self, Plan, WriteOptions};
use keras2safetensors::inspect::{human_bytes, shape_string};
use keras2safetensors::keras::{self, FileKind};
use keras2safetensors::values::parallel_map;
use keras2safetensors::{open, Error, ErrorKind, Model, Result};

use super::{parse_size, print_json, print_out, progress_bar, Outcome, PlanArgs, ReadArgs};

/// Convert Keras weight files to safetensors.
///
/// Reads Keras HDF5 files (`model.save('x.h5')`, `save_weights('x.h5')`,
/// Keras 0.x to Keras 3), Keras 3 `.weights.h5`, `.keras` archives and
/// sharded saves. Each tensor is named `<layer path>/<label>`, e.g.
/// `efficientnet/block1a_dwconv/depthwise_kernel`, and holds exactly the
/// bytes Keras's `get_weights()` returns; `--layout pytorch` gives torch.nn
/// names and axes instead. Outputs are written to temporary files and
/// renamed into place when complete, so a failed run leaves nothing behind.
///
/// Several inputs, or a folder (searched recursively for Keras files), are
/// converted in parallel into the OUTPUT folder; one bad file does not stop
/// the others, and the exit code is 1 if any failed.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors convert model.h5 -o model.safetensors
  keras2safetensors convert effnet_weights.h5 --layout pytorch --num-batches-tracked
  keras2safetensors convert model.keras --layout pytorch --max-shard-size 2GB -o out/
  keras2safetensors convert checkpoints/ -o converted/ --dry-run")]
pub struct Args {
    /// Keras files or folders (files are recognised by content, not extension).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write: a file for one input (default: INPUT with the
    /// extension `.safetensors`), a folder for several inputs, a folder input
    /// or `--max-shard-size` (default: beside each input).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Overwrite outputs that exist.
    #[arg(long)]
    force: bool,
    /// No progress bar and no summary.
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    plan: PlanArgs,
    /// Split each output into Hugging Face shards of at most SIZE bytes of
    /// tensor data (`5GB`, `500MB`; decimal units as Hugging Face uses,
    /// `GiB`/`MiB` binary): `model-00001-of-00003.safetensors` ... plus
    /// `model.safetensors.index.json`, in a folder. One shard is written as
    /// `model.safetensors`, with no index.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Print the name mapping (Keras name -> output name, shape, dtype) and
    /// write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One conversion's result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Converted {
    input: String,
    output: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    tensors: usize,
    bytes: u64,
    seconds: f64,
    files: Vec<String>,
    warnings: Vec<String>,
}

/// An input, opened and planned, waiting to be written.
struct Job {
    input: PathBuf,
    output: PathBuf,
    prepared: Result<(Model, Plan)>,
    started: Instant,
}

pub fn run(args: Args) -> Result<Outcome> {
    let read = args.read.options();
    let plan_options = args.plan.options()?;
    let write = WriteOptions {
        force: args.force,
        max_shard_bytes: args.max_shard_size,
    };
    // A SavedModel or checkpoint folder is one model, not a batch.
    let batch = args.inputs.len() > 1
        || args
            .inputs
            .iter()
            .any(|p| p.is_dir() && !keras::tf_checkpoint::is_tf_folder(p));
    let pairs = if batch {
        batch_pairs(
            &args.inputs,
            args.output.as_deref(),
            args.max_shard_size.is_some(),
        )?
    } else {
        let input = args.inputs[0].clone();
        let output = args
            .output
            .clone()
            .unwrap_or_else(|| default_output(&input, args.max_shard_size.is_some()));
        vec![(input, output)]
    };

    let jobs: Vec<Job> = pairs
        .into_iter()
        .map(|(input, output)| {
            let started = Instant::now();
            let prepared = prepare(&input, &output, &read, &plan_options, &write, args.dry_run);
            Job {
                input,
                output,
                prepared,
                started,
            }
        })
        .collect();
    for job in &jobs {
        if let Ok((model, plan)) = &job.prepared {
            for note in model.notes.iter().chain(&plan.notes) {
                eprintln!("note: {}: {note}", job.input.display());
            }
            for warning in &plan.warnings {
                eprintln!("warning: {}: {warning}", job.input.display());
            }
            for reason in export::plan::skip_reasons(&plan.skipped) {
                eprintln!("note: {}: not written: {reason}", job.input.display());
            }
        }
    }
    if args.dry_run {
        return dry_run(jobs, batch);
    }

    let total: u64 = jobs
        .iter()
        .filter_map(|j| j.prepared.as_ref().ok())
        .map(|(_, plan)| plan.total_bytes())
        .sum();
    let bar =
        (!args.quiet && !args.json && std::io::stderr().is_terminal()).then(|| progress_bar(total));
    let bar = Mutex::new(bar);
    // Inputs that failed to open are not written; their error is taken
    // from the job below.
    let written = parallel_map(jobs.len(), |i| {
        let job = &jobs[i];
        let (model, plan) = job.prepared.as_ref().ok()?;
        Some(export::write(plan, model, &job.output, &write, &mut |n| {
            if let Ok(guard) = bar.lock() {
                if let Some(bar) = guard.as_ref() {
                    bar.inc(n);
                }
            }
        }))
    });
    if let Ok(guard) = bar.lock() {
        if let Some(bar) = guard.as_ref() {
            bar.finish_and_clear();
        }
    }

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (job, written) in jobs.into_iter().zip(written) {
        let outcome = match (written, job.prepared) {
            (Some(outcome), _) => outcome,
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => unreachable!("every prepared job is written"),
        };
        let mut report = Converted {
            input: job.input.display().to_string(),
            output: job.output.display().to_string(),
            ok: outcome.is_ok(),
            error: None,
            tensors: 0,
            bytes: 0,
            seconds: job.started.elapsed().as_secs_f64(),
            files: Vec::new(),
            warnings: Vec::new(),
        };
        match outcome {
            Ok(summary) => {
                report.tensors = summary.tensors;
                report.bytes = summary.bytes;
                report.seconds = summary.elapsed.as_secs_f64();
                report.files = summary
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                for w in &summary.warnings {
                    eprintln!("warning: {}: {w}", job.input.display());
                }
                report.warnings = summary.warnings;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                failures.push(e);
            }
        }
        reports.push(report);
    }

    if args.json {
        print_json(&reports)?;
    } else if !args.quiet {
        print_out(&summary_text(&reports, batch))?;
    }
    match (batch, failures.into_iter().next()) {
        // One input: its error is the one line on stderr.
        (false, Some(e)) => Err(e),
        (true, Some(_)) => {
            for r in reports.iter().filter(|r| !r.ok) {
                eprintln!("error: {}", r.error.as_deref().unwrap_or("failed"));
            }
            Ok(Outcome::Mismatch)
        }
        (_, None) => Ok(Outcome::Success),
    }
}

/// Opens and plans one input, and checks its output is free.
fn prepare(
    input: &Path,
    output: &Path,
    read: &keras2safetensors::ReadOptions,
    plan_options: &keras2safetensors::PlanOptions,
    write: &WriteOptions,
    dry_run: bool,
) -> Result<(Model, Plan)> {
    if !dry_run && !write.force && write.max_shard_bytes.is_none() && output.exists() {
        return Err(Error::new(output, ErrorKind::OutputExists));
    }
    let model = open(input, read)?;
    let plan = export::plan(&model, input, plan_options)?;
    export::plan::ensure_tensors(&plan, &model, input)?;
    Ok((model, plan))
}

fn dry_run(jobs: Vec<Job>, batch: bool) -> Result<Outcome> {
    let mut text = String::new();
    let mut failed = None;
    for job in jobs {
        match job.prepared {
            Ok((_, plan)) => {
                if batch {
                    text.push_str(&format!(
                        "# {} -> {}\n",
                        job.input.display(),
                        job.output.display()
                    ));
                }
                for t in &plan.tensors {
                    text.push_str(&format!(
                        "{} -> {}  {}  {}\n",
                        t.keras_name,
                        t.name,
                        shape_string(&t.shape),
                        t.dtype
                    ));
                }
            }
            Err(e) => failed = Some(e),
        }
    }
    print_out(&text)?;
    match failed {
        Some(e) if !batch => Err(e),
        Some(e) => {
            eprintln!("error: {e}");
            Ok(Outcome::Mismatch)
        }
        None => Ok(Outcome::Success),
    }
}

fn summary_text(reports: &[Converted], batch: bool) -> String {
    if !batch {
        return reports
            .iter()
            .filter(|r| r.ok)
            .map(|r| {
                let files = if r.files.len() > 1 {
                    format!("{} ({} files)", r.output, r.files.len())
                } else {
                    r.output.clone()
                };
                format!(
                    "{} -> {files}: {} tensors, {} in {:.2} s\n",
                    r.input,
                    r.tensors,
                    human_bytes(r.bytes),
                    r.seconds
                )
            })
            .collect();
    }
    let width = reports
        .iter()
        .map(|r| r.input.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>7}  {:>12}  {:>8}\n",
        "Input", "Result", "Tensors", "Bytes", "Seconds"
    );
    for r in reports {
        let result = if r.ok { "ok" } else { "FAILED" };
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>7}  {:>12}  {:>8.2}\n",
            r.input, result, r.tensors, r.bytes, r.seconds
        ));
    }
    let ok = reports.iter().filter(|r| r.ok).count();
    out.push_str(&format!("{ok} of {} converted\n", reports.len()));
    out
}

/// Inputs and outputs for a batch: files as given, folders searched
/// recursively for Keras files, each written under `output` (or beside
/// its input) with the `.safetensors` extension.
fn batch_pairs(
    inputs: &[PathBuf],
    output: Option<&Path>,
    shards: bool,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    if let Some(dir) = output {
        if dir.is_file() {
            return Err(Error::new(
                dir,
                ErrorKind::Unsupported(
                    "several inputs need an output folder, and this is a file".into(),
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::new(dir, e.into()))?;
    }
    let mut pairs = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            find_keras_files(input, &mut found)?;
            found.sort();
            for file in found {
                let relative = file.strip_prefix(input).unwrap_or(&file).to_path_buf();
                let target = match output {
                    Some(dir) => default_output(&dir.join(&relative), shards),
                    None => default_output(&file, shards),
                };
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::new(parent, e.into()))?;
                }
                pairs.push((file, target));
            }
        } else {
            let name = input.file_name().map(PathBuf::from).unwrap_or_default();
            let target = match output {
                Some(dir) => default_output(&dir.join(name), shards),
                None => default_output(input, shards),
            };
            pairs.push((input.clone(), target));
        }
    }
    Ok(pairs)
}

/// Keras files under `dir`, by content: HDF5, zip archives and sharded
/// indexes; a shard whose index is there is left to the index.
fn find_keras_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::new(dir, e.into()))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::new(dir, e.into()))?.path();
        if path.is_dir() {
            // A SavedModel or checkpoint folder is one model.
            if keras::tf_checkpoint::is_tf_folder(&path) {
                found.push(path);
            } else {
                find_keras_files(&path, found)?;
            }
            continue;
        }
        let is_index = path.to_string_lossy().ends_with(".weights.json");
        match keras::detect(&path) {
            Ok(FileKind::Hdf5) if !keras::is_shard_of_index(&path) => found.push(path),
            Ok(FileKind::Zip) => found.push(path),
            Ok(FileKind::Json) if is_index => found.push(path),
            // A TF checkpoint, once, by its index file.
            Ok(FileKind::TfCheckpoint) if path.extension().is_some_and(|e| e == "index") => {
                found.push(path)
            }
            _ => {}
        }
    }
    Ok(())
}

/// INPUT with the extension `.safetensors` (or, for shards, without an
/// extension: a folder); Keras's double extensions (`x.weights.h5`,
/// `x.weights.json`) are replaced whole.
fn default_output(input: &Path, folder: bool) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".weights.h5", ".weights.json"]
        .iter()
        .find_map(|double| name.strip_suffix(double))
        .map(str::to_string)
        .unwrap_or_else(|| {
            Path::new(&name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name.clone())
        });
    if folder {
        input.with_file_name(stem)
    } else {
        input.with_file_name(format!("{stem}.safetensors"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_outputs_replace_keras_double_extensions() {
        assert_eq!(
            default_output(Path::new("d/m.h5"), false),
            Path::new("d/m.safetensors")
        );
        assert_eq!(
            default_output(Path::new("m.weights.h5"), false),
            Path::new("m.safetensors")
        );
        assert_eq!(
            default_output(Path::new("d/m.keras"), true),
            Path::new("d/m")
        );
    }
}
