//! Command-line flags and one short function per subcommand.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use keras2safetensors::inspect::{human_bytes, inspect, render_table};
use keras2safetensors::{export, open, Error, ErrorKind, ReadOptions, Result};

/// Convert Keras HDF5 weight files to safetensors, and see what is inside a
/// saved model.
///
/// Exit codes: 0 success, 1 the input (or output) could not be handled,
/// 2 the command line is wrong.
#[derive(Parser, Debug)]
#[command(name = "keras2safetensors", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a Keras weight file to safetensors.
    ///
    /// Reads files from `model.save('x.h5')` (weights under `model_weights/`)
    /// and `model.save_weights('x.h5')`, written by Keras 2.0 to tf-keras 2.x
    /// or by Keras 3's legacy `.h5` saving. Each tensor is named
    /// `<layer path>/<label>`, e.g. `efficientnet/block1a_dwconv/depthwise_kernel`,
    /// and holds exactly the bytes Keras's `get_weights()` returns. The
    /// output is written to a temporary file and renamed into place when
    /// complete, so a failed run leaves nothing behind.
    Convert {
        /// The Keras file to read (its kind is judged by content, not extension).
        input: PathBuf,
        /// Where to write; defaults to INPUT with the extension `.safetensors`.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite OUTPUT if it exists.
        #[arg(long)]
        force: bool,
        /// No progress bar and no summary line.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show the layers, labels, shapes, dtypes and parameter counts in a file.
    ///
    /// Takes Keras HDF5 files and safetensors files. Reads structure only,
    /// never weight data, so it is instant on a multi-GB file.
    Inspect {
        /// The file to describe.
        file: PathBuf,
        /// Print one JSON object instead of the table (schema in the README).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// How to read the input, for every command that reads Keras files.
#[derive(clap::Args, Debug)]
struct ReadArgs {
    /// Also read the optimizer state (Adam moments, iteration count), named
    /// `optimizer/<stored name>`. Skipped by default: it is not part of the
    /// model.
    #[arg(long)]
    include_optimizer: bool,
    /// A model config (the `config.json` of a `.keras` archive, or
    /// `model.to_json()`) for files that carry none, such as a Keras 3
    /// `.weights.h5`: it gives each layer's class, name and options, so
    /// weights stored by position get their labels.
    #[arg(long, value_name = "CONFIG_JSON")]
    config: Option<PathBuf>,
}

impl ReadArgs {
    fn options(self) -> ReadOptions {
        ReadOptions {
            include_optimizer: self.include_optimizer,
            config: self.config,
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert {
            input,
            output,
            force,
            quiet,
            read,
        } => {
            let output = output.unwrap_or_else(|| default_output(&input));
            convert(&input, &output, force, quiet, &read.options())
        }
        Command::Inspect { file, json, read } => {
            let summary = inspect(&file, &read.options())?;
            if json {
                let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
                println!("{text}");
            } else {
                print!("{}", render_table(&summary));
            }
            Ok(())
        }
    }
}

fn convert(
    input: &Path,
    output: &Path,
    force: bool,
    quiet: bool,
    options: &ReadOptions,
) -> Result<()> {
    if !force && output.exists() {
        return Err(Error::new(output, ErrorKind::OutputExists));
    }
    let model = open(input, options)?;
    for note in &model.notes {
        eprintln!("note: {}: {note}", input.display());
    }
    let plan = export::plan(&model, input)?;
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| progress_bar(plan.total_bytes()));
    let summary = export::write(&plan, &model, output, force, &mut |n| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if !quiet {
        println!(
            "{} -> {}: {} tensors, {} in {:.2} s",
            input.display(),
            output.display(),
            summary.tensors,
            human_bytes(summary.bytes),
            summary.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// INPUT with the extension `.safetensors`; Keras's double extensions
/// (`x.weights.h5`, `x.weights.json`) are replaced whole.
fn default_output(input: &Path) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for double in [".weights.h5", ".weights.json"] {
        if let Some(stem) = name.strip_suffix(double) {
            return input.with_file_name(format!("{stem}.safetensors"));
        }
    }
    input.with_extension("safetensors")
}

fn progress_bar(total_bytes: u64) -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(10));
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
