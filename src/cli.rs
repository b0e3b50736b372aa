//! Command-line flags and one short function per subcommand.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regex::Regex;

use keras2safetensors::dtype::Dtype;
use keras2safetensors::export::{self, rename, Layout, PlanOptions, WriteOptions};
use keras2safetensors::inspect::{human_bytes, inspect, render_table, shape_string};
use keras2safetensors::{open, Error, ErrorKind, ReadOptions, Result};

/// Convert Keras weight files to safetensors, and see what is inside a saved
/// model.
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
    /// Reads Keras HDF5 files (`model.save('x.h5')`, `save_weights('x.h5')`,
    /// Keras 1 to Keras 3), Keras 3 `.weights.h5`, `.keras` archives and
    /// sharded saves. Each tensor is named `<layer path>/<label>`, e.g.
    /// `efficientnet/block1a_dwconv/depthwise_kernel`, and holds exactly the
    /// bytes Keras's `get_weights()` returns; `--layout pytorch` gives
    /// torch.nn names and axes instead. Outputs are written to temporary
    /// files and renamed into place when complete, so a failed run leaves
    /// nothing behind.
    Convert {
        /// The Keras file to read (its kind is judged by content, not extension).
        input: PathBuf,
        /// Where to write; defaults to INPUT with the extension
        /// `.safetensors` (with `--max-shard-size`, a folder: INPUT without
        /// its extension).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite outputs that exist.
        #[arg(long)]
        force: bool,
        /// No progress bar and no summary line.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        plan: PlanArgs,
        /// Split the output into Hugging Face shards of at most SIZE bytes
        /// of tensor data (`5GB`, `500MB`; decimal units as Hugging Face
        /// uses, `GiB`/`MiB` binary): `model-00001-of-00003.safetensors` ...
        /// plus `model.safetensors.index.json`, in the OUTPUT folder. One
        /// shard is written as `model.safetensors`, with no index.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_shard_size: Option<u64>,
        /// Print the name mapping (Keras name -> output name, shape, dtype)
        /// and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the layers, labels, shapes, dtypes and parameter counts in a file.
    ///
    /// Takes every Keras format `convert` reads, and safetensors files.
    /// Reads structure only, never weight data, so it is instant on a
    /// multi-GB file.
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// Keras names (`conv/kernel`) and the bytes of `get_weights()`.
    Keras,
    /// torch.nn names (`conv.weight`) and axes: conv kernels permuted,
    /// Dense transposed, BatchNorm as running_mean/running_var, RNN gates
    /// reordered.
    Pytorch,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F16,
    Bf16,
    F32,
}

/// What to write, for `convert`.
#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Tensor names and axes.
    #[arg(long, value_enum, default_value = "keras")]
    layout: LayoutArg,
    /// Cast floating tensors to this type (round to nearest even; integer
    /// tensors are left alone; values too large become infinite, and each
    /// tensor where that happens is reported).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    /// A file of `regex => replacement` lines applied in order to every
    /// output name (replacements take `$1`, `${name}`); `#` starts a comment.
    #[arg(long, value_name = "RULES")]
    rename: Option<PathBuf>,
    /// Keep only tensors whose output name matches this regex.
    #[arg(long, value_name = "REGEX")]
    include: Option<Regex>,
    /// Leave out tensors whose output name matches this regex.
    #[arg(long, value_name = "REGEX")]
    exclude: Option<Regex>,
    /// Leave out this layer (its path as `inspect` shows it), e.g. one with
    /// no exact PyTorch equivalent. Repeat for several.
    #[arg(long, value_name = "LAYER")]
    skip: Vec<String>,
    /// With `--layout pytorch`: add a zero `num_batches_tracked` to each
    /// BatchNorm, as torch.nn.BatchNorm2d's state dict has.
    #[arg(long)]
    num_batches_tracked: bool,
}

impl PlanArgs {
    fn options(self) -> Result<PlanOptions> {
        let rename = match &self.rename {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::new(path, e.into()))?;
                rename::parse_rules(&text).map_err(|e| {
                    Error::new(path, ErrorKind::Unsupported(format!("rename rules: {e}")))
                })?
            }
            None => Vec::new(),
        };
        Ok(PlanOptions {
            layout: match self.layout {
                LayoutArg::Keras => Layout::Keras,
                LayoutArg::Pytorch => Layout::PyTorch,
            },
            dtype: self.dtype.map(|d| match d {
                DtypeArg::F16 => Dtype::F16,
                DtypeArg::Bf16 => Dtype::BF16,
                DtypeArg::F32 => Dtype::F32,
            }),
            rename,
            include: self.include,
            exclude: self.exclude,
            skip: self.skip,
            num_batches_tracked: self.num_batches_tracked,
        })
    }
}

/// Parses `5GB`, `500MB`, `2GiB`, `1000` into bytes.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 5GB or 500MB"))?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KB, MB, GB, TB or KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (number * scale as f64).round();
    if bytes < 1.0 {
        return Err(format!("`{text}` is less than one byte"));
    }
    Ok(bytes as u64)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert {
            input,
            output,
            force,
            quiet,
            read,
            plan,
            max_shard_size,
            dry_run,
        } => {
            let output = output.unwrap_or_else(|| default_output(&input, max_shard_size.is_some()));
            let write = WriteOptions {
                force,
                max_shard_bytes: max_shard_size,
            };
            let job = Job {
                input: &input,
                output: &output,
                quiet,
                dry_run,
            };
            convert(job, &read.options(), &plan.options()?, &write)
        }
        Command::Inspect { file, json, read } => {
            let summary = inspect(&file, &read.options())?;
            let text = if json {
                serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n"
            } else {
                render_table(&summary)
            };
            print_out(&text)
        }
    }
}

struct Job<'a> {
    input: &'a Path,
    output: &'a Path,
    quiet: bool,
    dry_run: bool,
}

fn convert(
    job: Job<'_>,
    read: &ReadOptions,
    plan_options: &PlanOptions,
    write: &WriteOptions,
) -> Result<()> {
    let Job {
        input,
        output,
        quiet,
        dry_run,
    } = job;
    if !dry_run && !write.force && write.max_shard_bytes.is_none() && output.exists() {
        return Err(Error::new(output, ErrorKind::OutputExists));
    }
    let model = open(input, read)?;
    for note in &model.notes {
        eprintln!("note: {}: {note}", input.display());
    }
    let plan = export::plan(&model, input, plan_options)?;
    for note in &plan.notes {
        eprintln!("note: {}: {note}", input.display());
    }
    if dry_run {
        let mut text = String::new();
        for t in &plan.tensors {
            text.push_str(&format!(
                "{} -> {}  {}  {}\n",
                t.keras_name,
                t.name,
                shape_string(&t.shape),
                t.dtype
            ));
        }
        return print_out(&text);
    }
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| progress_bar(plan.total_bytes()));
    let summary = export::write(&plan, &model, output, write, &mut |n| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    for warning in &summary.warnings {
        eprintln!("warning: {}: {warning}", input.display());
    }
    if !quiet {
        let files = if summary.files.len() == 1 {
            output.display().to_string()
        } else {
            format!("{} ({} files)", output.display(), summary.files.len())
        };
        print_out(&format!(
            "{} -> {files}: {} tensors, {} in {:.2} s\n",
            input.display(),
            summary.tensors,
            human_bytes(summary.bytes),
            summary.elapsed.as_secs_f64()
        ))?;
    }
    Ok(())
}

/// Writes human output to stdout; a closed pipe comes back as an error
/// that `main` treats as a quiet end, never a panic.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::new("<stdout>", e.into()))
}

/// Whether an error is stdout closing under us (`... | head`).
pub fn is_broken_pipe(e: &Error) -> bool {
    matches!(&e.kind, ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_hugging_face_writes_them() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }

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
