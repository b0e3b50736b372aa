//! `convert`: one file, or many in parallel.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use keras2safetensors::cancel;
use keras2safetensors::export::{self, Plan, WriteOptions};
use keras2safetensors::files::{self, CreatedDirs, FileId};
use keras2safetensors::inspect::{human_bytes, shape_string};
use keras2safetensors::keras;
use keras2safetensors::values::parallel_map;
use keras2safetensors::{open, Model, PlanOptions, Result};

use keras2safetensors::terminal::escape;

use super::outputs;
use super::{
    advance, parse_size, print_json, print_out, progress_bar, Outcome, PlanArgs, ReadArgs,
};

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
  keras2safetensors convert efficientnetb0.h5 --preset timm-tf-efficientnet -o b0.safetensors
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
    // Files read besides the inputs: never replaced by an output.
    let side_inputs: Vec<PathBuf> = read
        .config
        .iter()
        .chain(&args.plan.rename)
        .cloned()
        .collect();
    let plan_options = PlanOptions {
        drop_keras_names: !args.dry_run,
        ..args.plan.options()?
    };
    let read = match plan_options.preset {
        Some(preset) => preset.read_options(&read),
        None => read,
    };
    let write = WriteOptions {
        force: args.force,
        max_shard_bytes: args.max_shard_size,
        inputs: Vec::new(),
    };
    // A SavedModel or checkpoint folder is one model, not a batch.
    let batch = outputs::is_batch(&args.inputs);
    let mut planning_notes = Vec::new();
    // `-o -`: written to a temporary file (the writer needs one to seek
    // and to sync), then copied to standard output.
    let to_stdout =
        outputs::stdout_target(&args.inputs, args.output.as_deref(), args.max_shard_size)?;
    let output = match &to_stdout {
        Some(dir) => Some(dir.path().join("stdout.safetensors")),
        None => args.output.clone(),
    };
    let pairs = outputs::plan_outputs(
        &args.inputs,
        output.as_deref(),
        args.max_shard_size.is_some(),
        &mut planning_notes,
    )?;
    for note in &planning_notes {
        eprintln!("{}", escape(&format!("note: {note}")));
    }

    // Every file the run reads, by identity: no output may be one of them.
    let protected: Vec<FileId> = pairs
        .iter()
        .map(|(input, _)| input)
        .chain(&side_inputs)
        .filter_map(|p| FileId::of_path(p))
        .collect();
    let mut jobs: Vec<Job> = pairs
        .into_iter()
        .map(|(input, output)| {
            let started = Instant::now();
            let prepared = cancel::check(&input).and_then(|_| {
                prepare(
                    &input,
                    &output,
                    &read,
                    &plan_options,
                    &write,
                    &protected,
                    args.dry_run,
                )
            });
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
                eprintln!(
                    "{}",
                    escape(&format!("note: {}: {note}", job.input.display()))
                );
            }
            for warning in &plan.warnings {
                eprintln!(
                    "{}",
                    escape(&format!("warning: {}: {warning}", job.input.display()))
                );
            }
            for reason in export::plan::skip_reasons(&plan.skipped) {
                eprintln!(
                    "{}",
                    escape(&format!(
                        "note: {}: not written: {reason}",
                        job.input.display()
                    ))
                );
            }
        }
    }
    if let Some(job) = jobs.first().filter(|_| cancel::requested()) {
        return Err(cancel::stopped(&job.input));
    }
    if args.dry_run {
        return dry_run(jobs, batch);
    }

    // The folders a batch writes into are made now, one after the other,
    // for the inputs that opened; those still empty at the end (every input
    // in them failed) go again. A shard folder itself is the writer's.
    let mut created = CreatedDirs::new();
    for job in &mut jobs {
        if job.prepared.is_err() || !batch {
            continue;
        }
        let folder = job.output.parent();
        if let Some(folder) = folder.filter(|f| !f.as_os_str().is_empty()) {
            if let Err(e) = created.create(folder) {
                job.prepared = Err(e);
            }
        }
    }

    let total: u64 = jobs
        .iter()
        .filter_map(|j| j.prepared.as_ref().ok())
        .map(|(_, plan)| plan.total_bytes())
        .sum();
    let bar = (!args.quiet && !args.json && std::io::stderr().is_terminal()).then(|| {
        let what = match &jobs[..] {
            [one] => one
                .input
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            many => format!("{} files", many.len()),
        };
        progress_bar(total, &what)
    });
    let bar = Mutex::new(bar);
    // Inputs that failed to open are not written; their error is taken
    // from the job below.
    let written = parallel_map(jobs.len(), |i| {
        let job = &jobs[i];
        let (model, plan) = job.prepared.as_ref().ok()?;
        let mut write = write.clone();
        write.inputs = job_inputs(&job.input, &side_inputs);
        let written = export::write(plan, model, &job.output, &write, &mut |n| {
            if let Ok(guard) = bar.lock() {
                if let Some(bar) = guard.as_ref() {
                    advance(bar, n);
                }
            }
        });
        Some(written.map_err(|e| e.refusal_names(&job.input)))
    });
    if let Ok(guard) = bar.lock() {
        if let Some(bar) = guard.as_ref() {
            bar.finish_and_clear();
        }
    }
    created.remove_empty();
    let stopped = written
        .iter()
        .zip(&jobs)
        .any(|(w, j)| matches!(w, Some(Err(_))) || j.prepared.is_err());
    if stopped && cancel::requested() {
        // The writes stopped took their files away (those complete before
        // the stop stay): one line says so.
        let first = jobs.first().map(|j| j.input.clone()).unwrap_or_default();
        return Err(cancel::stopped(&first));
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
                    eprintln!(
                        "{}",
                        escape(&format!("warning: {}: {w}", job.input.display()))
                    );
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

    if to_stdout.is_some() {
        // Standard output carries the file itself; nothing else goes there.
        if let Some(written) = reports
            .first()
            .filter(|r| r.ok)
            .map(|r| PathBuf::from(&r.output))
        {
            outputs::copy_to_stdout(&written)?;
        }
    } else if args.json {
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

/// The files one conversion reads: its input, the index of a shard, and
/// the config and rename rules.
fn job_inputs(input: &Path, side_inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut inputs = vec![input.to_path_buf()];
    inputs.extend(keras::shard_index_of(input));
    inputs.extend(side_inputs.iter().cloned());
    inputs
}

/// Opens and plans one input, and checks its output may be written: not
/// there (or `--force`), a regular file, and none of the files the run
/// reads (`protected`).
fn prepare(
    input: &Path,
    output: &Path,
    read: &keras2safetensors::ReadOptions,
    plan_options: &keras2safetensors::PlanOptions,
    write: &WriteOptions,
    protected: &[FileId],
    dry_run: bool,
) -> Result<(Model, Plan)> {
    if !dry_run {
        let mut protected = protected.to_vec();
        protected.extend(keras::shard_index_of(input).and_then(|i| FileId::of_path(&i)));
        match write.max_shard_bytes {
            None => files::check_output(output, write.force, &protected)?,
            Some(_) => files::check_output_folder(output)?,
        }
    }
    let mut model = open(input, read)?;
    let plan = export::plan(&mut model, input, plan_options)?;
    export::plan::ensure_tensors(&plan, input)?;
    model.forget_layers();
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
                        t.keras_name(),
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
