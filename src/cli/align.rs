//! `align`: rename rules that land a Keras model on a PyTorch model's
//! state-dict names, found by structure and shape.

use std::path::PathBuf;

use keras2safetensors::align::{align, preprocessing_layers, read_reference, rules_text};
use keras2safetensors::export::{self, rename, Layout, PlanOptions};
use keras2safetensors::files::{self, FileId};
use keras2safetensors::{ConvertOptions, Error, ErrorKind, Result, WriteOptions};

use super::{parse_class, print_out, Outcome, ReadArgs};

/// Map a Keras model onto a PyTorch model's state-dict names, by structure
/// and shape, and write the mapping as `--rename` rules.
///
/// REFERENCE is the target model's state dict: a safetensors file (what
/// `safetensors.torch.save_file(model.state_dict(), "ref.safetensors")`
/// writes; its data is never read) or a JSON object `{name: shape}` in
/// state-dict order. Keras's in-model preprocessing (Normalization) is left
/// out. Refused, naming the first module without a counterpart, when the
/// two models differ in structure.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  keras2safetensors align effnet_b0.h5 --to timm_b0.safetensors -o b0.rules
  keras2safetensors align effnet_b0.h5 --to timm_b0.safetensors --apply b0.safetensors
  keras2safetensors align xception.keras --to state_dict_shapes.json")]
pub struct Args {
    /// The Keras model: any format `convert` reads.
    source: PathBuf,
    /// The target model's state dict (safetensors or `{name: shape}` JSON).
    #[arg(long, value_name = "REFERENCE")]
    to: PathBuf,
    /// Write the rules here instead of to standard output.
    #[arg(short = 'o', long, value_name = "RULES")]
    output: Option<PathBuf>,
    /// Also convert SOURCE with the rules, into this safetensors file.
    #[arg(long, value_name = "OUT")]
    apply: Option<PathBuf>,
    /// Replace existing outputs.
    #[arg(long)]
    force: bool,
    /// Take layer LAYER as class CLASS (as for `convert --class`).
    #[arg(long = "class", value_name = "LAYER=CLASS", value_parser = parse_class)]
    classes: Vec<(String, String)>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(args: Args) -> Result<Outcome> {
    let read = args.read.options();
    // Outputs may be neither the model, its config, nor the reference.
    let inputs: Vec<FileId> = [Some(&args.source), read.config.as_ref(), Some(&args.to)]
        .into_iter()
        .flatten()
        .filter_map(|p| FileId::of_path(p))
        .collect();
    let reference = read_reference(&args.to)?;
    let mut model = keras2safetensors::open(&args.source, &read)?;
    let skip = preprocessing_layers(&model);
    let plan_options = PlanOptions {
        layout: Layout::PyTorch,
        num_batches_tracked: reference.tracks_batches(),
        skip: skip.clone(),
        classes: args.classes.clone(),
        ..PlanOptions::default()
    };
    let plan = export::plan(&mut model, &args.source, &plan_options)?;
    let alignment = align(&plan.tensors, &reference).map_err(|e| {
        Error::new(
            &args.source,
            ErrorKind::Unsupported(format!("cannot align with {}: {e}", args.to.display())),
        )
    })?;

    let mut usage = format!("convert {} --layout pytorch", args.source.display());
    if plan_options.num_batches_tracked {
        usage.push_str(" --num-batches-tracked");
    }
    for layer in &skip {
        usage.push_str(&format!(" --skip {layer}"));
    }
    let header = format!(
        "# keras2safetensors align {} --to {}\n# {} tensors in {} modules. Use: keras2safetensors {usage} --rename RULES\n",
        args.source.display(),
        args.to.display(),
        alignment.tensor_count,
        alignment.pairs.len(),
    );
    let text = rules_text(&alignment, &plan.tensors, &header);

    let by_name = alignment.pairs.iter().filter(|p| p.by_name_order).count();
    let mut report = format!(
        "{}: {} tensors in {} modules aligned with {}",
        args.source.display(),
        alignment.tensor_count,
        alignment.pairs.len(),
        args.to.display()
    );
    if by_name > 0 {
        report.push_str(&format!(
            "; {by_name} modules had siblings of identical shapes in the reference and were placed by name order (marked in the rules: check them)"
        ));
    }
    for layer in &skip {
        report.push_str(&format!("\nnote: layer `{layer}` left out: in-model preprocessing, which the target expects done outside the model"));
    }
    eprintln!("{report}");

    match &args.output {
        Some(path) => {
            files::check_output(path, args.force, &inputs)?;
            export::write_small_output(path, text.as_bytes(), args.force)?
        }
        None if args.apply.is_none() => print_out(&text)?,
        None => {}
    }
    if let Some(out) = &args.apply {
        let rules = rename::parse_rules(&text)
            .map_err(|e| Error::new(&args.source, ErrorKind::Unsupported(e)))?;
        let options = ConvertOptions {
            read,
            plan: PlanOptions {
                rename: rules,
                ..plan_options
            },
            write: WriteOptions {
                force: args.force,
                // The reference is an input too: never written over.
                inputs: vec![args.to.clone()],
                ..WriteOptions::default()
            },
        };
        let summary = keras2safetensors::convert_file(&args.source, out, &options, &mut |_| {})?;
        eprintln!(
            "{} -> {}: {} tensors",
            args.source.display(),
            out.display(),
            summary.tensors
        );
    }
    Ok(Outcome::Success)
}
