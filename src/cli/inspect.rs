//! `inspect`: what is inside a file, as a table or JSON.

use std::path::PathBuf;

use regex::Regex;

use keras2safetensors::inspect::{add_stats, inspect, render_table};
use keras2safetensors::Result;

use super::{print_json, print_out, Outcome, ReadArgs};

/// Show the layers, labels, shapes, dtypes and parameter counts in a file.
///
/// Takes every Keras format `convert` reads, and safetensors files (one
/// file, or a sharded `model.safetensors.index.json`). Reads structure
/// only, never weight data, so it is instant on a multi-GB file; `--stats`
/// reads every value once.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors inspect model.h5
  keras2safetensors inspect model.keras --json
  keras2safetensors inspect model.weights.h5 --config config.json --filter 'block1'
  keras2safetensors inspect model.safetensors --stats")]
pub struct Args {
    /// The file to describe: any Keras format, a safetensors file, or a
    /// sharded save's index.
    file: PathBuf,
    /// Print one JSON object instead of the table (schema in the README).
    #[arg(long)]
    json: bool,
    /// Per tensor: min, max, mean, standard deviation and counts of NaN,
    /// infinite and zero values, in one streaming pass over the data.
    #[arg(long)]
    stats: bool,
    /// Show only tensors whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    filter: Option<Regex>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(args: Args) -> Result<Outcome> {
    let read = args.read.options();
    let mut summary = inspect(&args.file, &read)?;
    if let Some(filter) = &args.filter {
        summary.retain_weights(|name| filter.is_match(name));
    }
    if args.stats {
        add_stats(&mut summary, &args.file, &read)?;
    }
    keras2safetensors::cancel::check(&args.file)?;
    if args.json {
        print_json(&summary)?;
    } else {
        print_out(&render_table(&summary))?;
    }
    Ok(Outcome::Success)
}
