//! Command-line flags, and one file per subcommand. No logic beyond wiring
//! and printing: the work is in the library.

mod align;
mod check;
mod convert;
mod inspect;
mod outputs;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regex::Regex;

use keras2safetensors::dtype::Dtype;
use keras2safetensors::export::presets::Preset;
use keras2safetensors::export::{rename, Layout, PlanOptions};
use keras2safetensors::terminal::escape_keeping_lines;
use keras2safetensors::{Error, ErrorKind, ReadOptions, Result};

/// Convert Keras weight files to safetensors, see what is inside a saved
/// model, and check files in CI.
///
/// Exit codes: 0 success (or: the files match), 1 a mismatch, or an input or
/// output that could not be handled (one line on stderr says which and
/// why), 2 the command line is wrong.
#[derive(Parser, Debug)]
#[command(name = "keras2safetensors", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Convert(convert::Args),
    Align(align::Args),
    Inspect(inspect::Args),
    Verify(check::VerifyArgs),
    Diff(check::DiffArgs),
    Manifest(check::ManifestArgs),
    Check(check::CheckArgs),
    Completions(CompletionsArgs),
}

/// Print shell completions for keras2safetensors.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors completions bash > ~/.local/share/bash-completion/completions/keras2safetensors
  keras2safetensors completions zsh > ~/.zfunc/_keras2safetensors
  keras2safetensors completions fish > ~/.config/fish/completions/keras2safetensors.fish")]
struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// What a command found: whether everything matched.
pub enum Outcome {
    Success,
    Mismatch,
}

pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Align(args) => align::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => check::verify(args),
        Command::Diff(args) => check::diff(args),
        Command::Manifest(args) => check::manifest(args),
        Command::Check(args) => check::check(args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(args.shell, &mut command, "keras2safetensors", &mut text);
            print_out(&String::from_utf8_lossy(&text))?;
            Ok(Outcome::Success)
        }
    }
}

/// How to read the input, for every command that reads Keras files.
#[derive(clap::Args, Debug, Clone)]
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
    /// Write what was understood even when some datasets of the input
    /// belong to no layer the reader knows; each is reported as skipped.
    /// Without it such a file is refused, naming the first such dataset,
    /// so that no array is ever dropped silently.
    #[arg(long)]
    allow_unclaimed: bool,
    /// Write datasets the file never wrote (HDF5 fills them with a fill
    /// value) even when they add more than the input's size to the output.
    /// Keras never writes such datasets; without this flag they are refused
    /// past that size, so a small crafted file cannot write gigabytes.
    #[arg(long)]
    allow_fill: bool,
    /// Decompress compressed datasets past 32 times the input's size (plus
    /// 16 MiB). Keras never compresses weights; without this flag a file
    /// that would decompress further is refused (a decompression bomb).
    #[arg(long)]
    allow_expansion: bool,
    /// TF1 checkpoints (Google AutoML EfficientDet releases): write each
    /// variable's `/ExponentialMovingAverage` shadow under the variable's
    /// own name, the values evaluation loads. Without it the shadows are
    /// skipped and the raw variables written.
    #[arg(long)]
    use_ema: bool,
}

impl ReadArgs {
    fn options(&self) -> ReadOptions {
        ReadOptions {
            include_optimizer: self.include_optimizer,
            config: self.config.clone(),
            allow_unclaimed: self.allow_unclaimed,
            allow_fill: self.allow_fill,
            allow_expansion: self.allow_expansion,
            use_ema: self.use_ema,
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
    /// With `--layout pytorch`: take layer LAYER (its path as `inspect`
    /// shows it) as class CLASS, e.g. `--class stem_conv=Conv2D`, where the
    /// file records no class and its weights fit several. Repeat for
    /// several layers.
    #[arg(long = "class", value_name = "LAYER=CLASS", value_parser = parse_class)]
    classes: Vec<(String, String)>,
    /// With `--layout pytorch`: refuse a layer that has no PyTorch
    /// equivalent (a custom layer, an unknown class) instead of writing its
    /// weights as stored under their Keras labels, with a warning.
    #[arg(long)]
    strict: bool,
    /// Map onto a PyTorch model's state-dict names, so the file loads with
    /// `load_state_dict(strict=True)`: implies `--layout pytorch` and
    /// `--num-batches-tracked` (and `--use-ema` for `effdet`), leaves out
    /// in-model preprocessing, and is refused when a tensor has no place in
    /// the target. `--rename` rules apply after it.
    #[arg(long, value_name = "NAME", conflicts_with = "layout",
          value_parser = clap::builder::PossibleValuesParser::new(Preset::names()))]
    preset: Option<String>,
}

/// Parses `--class LAYER=CLASS`.
fn parse_class(text: &str) -> std::result::Result<(String, String), String> {
    match text.rsplit_once('=') {
        Some((layer, class)) if !layer.is_empty() && !class.is_empty() => {
            Ok((layer.to_string(), class.to_string()))
        }
        _ => Err(format!(
            "`{text}` is not LAYER=CLASS (e.g. stem_conv=Conv2D)"
        )),
    }
}

impl PlanArgs {
    fn options(self) -> Result<PlanOptions> {
        let rename = match &self.rename {
            Some(path) => {
                let text = keras2safetensors::files::read_text(path)?;
                rename::parse_rules(&text).map_err(|e| {
                    Error::new(path, ErrorKind::Unsupported(format!("rename rules: {e}")))
                })?
            }
            None => Vec::new(),
        };
        let preset = self.preset.as_deref().and_then(Preset::named);
        Ok(PlanOptions {
            layout: match self.layout {
                _ if preset.is_some() => Layout::PyTorch,
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
            num_batches_tracked: self.num_batches_tracked || preset.is_some(),
            classes: self.classes,
            strict: self.strict,
            preset,
            // Kept by default; `convert` drops them unless listing them.
            drop_keras_names: false,
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

/// Writes human output to stdout, with control characters in names from
/// the files spelled out (see [`keras2safetensors::terminal`]).
fn print_out(text: &str) -> Result<()> {
    write_stdout(&escape_keeping_lines(text))
}

/// Writes to stdout as it is; a closed pipe comes back as an error that
/// `main` treats as a quiet end, never a panic.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::new("<stdout>", e.into()))
}

/// Prints a value as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    // Exact: JSON escapes control characters itself.
    write_stdout(&(serde_json::to_string_pretty(value).unwrap_or_default() + "\n"))
}

/// Whether an error is stdout closing under us (`... | head`).
pub fn is_broken_pipe(e: &Error) -> bool {
    matches!(&e.kind, ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A progress bar on stderr: what is being written, how far, how fast.
/// The time left is shown only once the rate is known (after a second),
/// so the first moments never promise hours.
fn progress_bar(total_bytes: u64, what: &str) -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(progress_style(false));
    bar.set_message(terminal_safe(what));
    bar
}

/// Advances the bar by `bytes`, showing the time left once it means something.
fn advance(bar: &ProgressBar, bytes: u64) {
    bar.inc(bytes);
    if bar.elapsed() >= std::time::Duration::from_secs(1)
        && bar.position() < bar.length().unwrap_or(0)
    {
        bar.set_style(progress_style(true));
    }
}

fn progress_style(with_eta: bool) -> ProgressStyle {
    let template = if with_eta {
        "{msg} {bar:40} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{msg} {bar:40} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn terminal_safe(text: &str) -> String {
    keras2safetensors::terminal::escape(text).into_owned()
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
}
