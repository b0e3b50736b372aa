//! `--rename RULES`: a small file of `pattern => replacement` lines applied
//! in order to every output name, so names can match a user's own module.
//!
//! Replacements take the regex crate's `$1` and `${name}`, plus four
//! computed forms, because model families number their blocks differently
//! and a rule per block number does not scale (Keras's `block2b` is timm's
//! `blocks.1.1` and Hugging Face's `blocks.2`):
//! - `${stage-1}`, `${n+2}`: the group read as an integer, plus or minus a
//!   constant;
//! - `${letter:index}`: a letter `a`, `b`, `c`, ... as `0`, `1`, `2`, ...;
//! - `${block:ordinal}`: the 0-based rank of the group's text among the
//!   distinct texts seen so far, in model order. A named group's ranks are
//!   shared by every rule that uses that name, so several rules can count
//!   the same blocks.
//! - `${k:stages(1,2,2,3)}`: a 0-based flat index split over consecutive
//!   groups of the sizes listed, as `group.position` (`4` is `2.1`): for
//!   checkpoints that number blocks across all stages (AutoML's
//!   `blocks_12`) where the target numbers them per stage.

use std::collections::HashMap;

use regex::{Captures, Regex};

/// One `pattern => replacement` line.
#[derive(Debug, Clone)]
pub struct RenameRule {
    pattern: Regex,
    replacement: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Group(Group),
    Shifted(Group, i64),
    LetterIndex(Group),
    Ordinal(Group),
    /// A flat index split over groups of these sizes.
    Stages(Group, Vec<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Group {
    Number(usize),
    Name(String),
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::Number(n) => write!(f, "{n}"),
            Group::Name(name) => f.write_str(name),
        }
    }
}

impl RenameRule {
    /// A rule from its two halves; groups the replacement names must exist
    /// in the pattern (the regex crate would silently put nothing there).
    pub fn new(pattern: &str, replacement: &str) -> Result<Self, String> {
        let pattern = Regex::new(pattern).map_err(|e| e.to_string())?;
        let pieces = parse_replacement(replacement)?;
        for piece in &pieces {
            let group = match piece {
                Piece::Text(_) => continue,
                Piece::Group(g)
                | Piece::Shifted(g, _)
                | Piece::LetterIndex(g)
                | Piece::Ordinal(g)
                | Piece::Stages(g, _) => g,
            };
            let exists = match group {
                Group::Number(n) => *n < pattern.captures_len(),
                Group::Name(name) => pattern.capture_names().flatten().any(|c| c == name),
            };
            if !exists {
                return Err(format!(
                    "the replacement uses group `{group}`, which `{}` does not capture",
                    pattern.as_str()
                ));
            }
        }
        Ok(RenameRule {
            pattern,
            replacement: replacement.to_string(),
            pieces,
        })
    }
}

impl std::fmt::Display for RenameRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} => {}", self.pattern.as_str(), self.replacement)
    }
}

/// Parses rules: one `regex => replacement` per line; blank lines and lines
/// starting with `#` are skipped.
pub fn parse_rules(text: &str) -> Result<Vec<RenameRule>, String> {
    let mut rules = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((pattern, replacement)) = line.split_once("=>") else {
            return Err(format!(
                "line {}: expected `pattern => replacement`, found `{line}`",
                number + 1
            ));
        };
        let rule = RenameRule::new(pattern.trim(), replacement.trim())
            .map_err(|e| format!("line {}: {e}", number + 1))?;
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_replacement(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        literal.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        let piece = if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
            rest = &braced[end + 1..];
            parse_braced(&braced[..end])?
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!(
                    "`$` must be followed by a group (`$1`, `${{name}}`) or `$` in `{text}`"
                ));
            }
            let group = group_of(&rest[..end]);
            rest = &rest[end..];
            Piece::Group(group)
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

fn parse_braced(inside: &str) -> Result<Piece, String> {
    let inside = inside.trim();
    if let Some((group, function)) = inside.split_once(':') {
        let group = group_of(valid_group(group.trim())?);
        let function = function.trim();
        if let Some(sizes) = function
            .strip_prefix("stages(")
            .and_then(|s| s.strip_suffix(')'))
        {
            return Ok(Piece::Stages(
                group,
                stage_sizes(sizes).ok_or_else(|| {
                    format!(
                        "`${{{inside}}}`: `stages(...)` takes sizes above 0, like `stages(1,2,2)`"
                    )
                })?,
            ));
        }
        return match function {
            "index" => Ok(Piece::LetterIndex(group)),
            "ordinal" => Ok(Piece::Ordinal(group)),
            other => Err(format!(
                "`${{{inside}}}`: unknown `:{other}` (use `:index`, `:ordinal` or `:stages(...)`)"
            )),
        };
    }
    if let Some(at) = inside.find(['+', '-']) {
        let group = group_of(valid_group(inside[..at].trim())?);
        let amount: i64 = inside[at..]
            .replace(' ', "")
            .parse()
            .map_err(|_| format!("`${{{inside}}}`: expected a whole number after the sign"))?;
        return Ok(Piece::Shifted(group, amount));
    }
    Ok(Piece::Group(group_of(valid_group(inside)?)))
}

/// `1, 2, 2`: whole numbers above 0.
fn stage_sizes(text: &str) -> Option<Vec<usize>> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|n| n.trim().parse().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()?;
    (!sizes.is_empty()).then_some(sizes)
}

fn valid_group(text: &str) -> Result<&str, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(text)
    } else {
        Err(format!("`{text}` is not a group number or name"))
    }
}

fn group_of(text: &str) -> Group {
    match text.parse() {
        Ok(n) => Group::Number(n),
        Err(_) => Group::Name(text.to_string()),
    }
}

/// Applies rules in order to names given in model order, keeping the
/// counts `${group:ordinal}` needs and which rules matched anything.
#[derive(Debug)]
pub struct Renamer<'a> {
    rules: &'a [RenameRule],
    used: Vec<bool>,
    /// Keyed by group name (shared across rules) or by (rule, number).
    ordinals: HashMap<(Option<usize>, Group), HashMap<String, usize>>,
}

impl<'a> Renamer<'a> {
    /// A renamer that has seen no name yet.
    pub fn new(rules: &'a [RenameRule]) -> Self {
        Renamer {
            rules,
            used: vec![false; rules.len()],
            ordinals: HashMap::new(),
        }
    }

    /// The name after every rule, and whether any rule matched it.
    pub fn apply(&mut self, name: &str) -> Result<(String, bool), String> {
        let mut name = name.to_string();
        let mut matched = false;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.pattern.is_match(&name) {
                continue;
            }
            matched = true;
            self.used[index] = true;
            let mut out = String::with_capacity(name.len());
            let mut last = 0;
            for caps in rule.pattern.captures_iter(&name) {
                let whole = caps.get(0).expect("group 0 always matches");
                out.push_str(&name[last..whole.start()]);
                for piece in &rule.pieces {
                    self.expand(index, rule, piece, &caps, &mut out)?;
                }
                last = whole.end();
            }
            out.push_str(&name[last..]);
            name = out;
        }
        Ok((name, matched))
    }

    fn expand(
        &mut self,
        index: usize,
        rule: &RenameRule,
        piece: &Piece,
        caps: &Captures,
        out: &mut String,
    ) -> Result<(), String> {
        let text_of = |group: &Group| -> &str {
            match group {
                Group::Number(n) => caps.get(*n),
                Group::Name(name) => caps.name(name),
            }
            .map_or("", |m| m.as_str())
        };
        let fail = |what: String| format!("rename rule `{rule}`: {what}");
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Group(group) => out.push_str(text_of(group)),
            Piece::Shifted(group, amount) => {
                let text = text_of(group);
                let value: i64 = text.parse().map_err(|_| {
                    fail(format!(
                        "`${{{group}{amount:+}}}` needs a number, got `{text}`"
                    ))
                })?;
                out.push_str(&(value + amount).to_string());
            }
            Piece::LetterIndex(group) => {
                let text = text_of(group);
                match text.as_bytes() {
                    [letter @ b'a'..=b'z'] => out.push_str(&(letter - b'a').to_string()),
                    _ => {
                        return Err(fail(format!(
                            "`${{{group}:index}}` needs one letter a-z, got `{text}`"
                        )))
                    }
                }
            }
            Piece::Stages(group, sizes) => {
                let text = text_of(group);
                let mut rest: usize = text.parse().map_err(|_| {
                    fail(format!(
                        "`${{{group}:stages(..)}}` needs a number, got `{text}`"
                    ))
                })?;
                let mut stage = 0;
                while stage < sizes.len() && rest >= sizes[stage] {
                    rest -= sizes[stage];
                    stage += 1;
                }
                if stage == sizes.len() {
                    return Err(fail(format!(
                        "`{text}` is past the {} positions of `stages(..)`",
                        sizes.iter().sum::<usize>()
                    )));
                }
                out.push_str(&format!("{stage}.{rest}"));
            }
            Piece::Ordinal(group) => {
                let key = match group {
                    Group::Name(_) => (None, group.clone()),
                    Group::Number(_) => (Some(index), group.clone()),
                };
                let seen = self.ordinals.entry(key).or_default();
                let next = seen.len();
                let rank = *seen.entry(text_of(group).to_string()).or_insert(next);
                out.push_str(&rank.to_string());
            }
        }
        Ok(())
    }

    /// The rules that matched no name so far.
    pub fn unused(&self) -> impl Iterator<Item = &RenameRule> {
        self.rules
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(rule, _)| rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename_all(rules: &str, names: &[&str]) -> Vec<String> {
        let rules = parse_rules(rules).unwrap();
        let mut renamer = Renamer::new(&rules);
        names.iter().map(|n| renamer.apply(n).unwrap().0).collect()
    }

    #[test]
    fn rules_apply_in_order_with_groups() {
        let out = rename_all(
            "# timm names\n^efficientnet_tiny\\. => backbone.\n\n(\\w+)_bn\\.(\\w+) => ${1}.bn.$2\n",
            &["efficientnet_tiny.stem_bn.weight"],
        );
        assert_eq!(out, ["backbone.stem.bn.weight"]);
        assert!(parse_rules("no arrow here").unwrap_err().contains("line 1"));
        assert!(parse_rules("( => x").is_err());
    }

    #[test]
    fn numbers_shift_and_letters_count_from_zero() {
        let rules = r"^block(\d)([a-z])_(\w+)\. => blocks.${1-1}.${2:index}.$3.";
        let out = rename_all(
            rules,
            &["block1a_dwconv.weight", "block7c_bn.bias", "top.weight"],
        );
        assert_eq!(
            out,
            [
                "blocks.0.0.dwconv.weight",
                "blocks.6.2.bn.bias",
                "top.weight"
            ]
        );
        assert_eq!(rename_all(r"^x(\d+) => y${1 + 10}", &["x5"]), ["y15"]);
    }

    #[test]
    fn named_ordinals_are_shared_by_rules_and_follow_first_appearance() {
        let rules = "^block(?P<b>\\d[a-z])_expand\\. => blocks.${b:ordinal}.expand.\n\
                     ^block(?P<b>\\d[a-z])_dw\\. => blocks.${b:ordinal}.dw.\n";
        let out = rename_all(
            rules,
            &[
                "block1a_dw.w",
                "block2a_expand.w",
                "block2a_dw.w",
                "block2b_expand.w",
                "block1a_dw.b",
            ],
        );
        assert_eq!(
            out,
            [
                "blocks.0.dw.w",
                "blocks.1.expand.w",
                "blocks.1.dw.w",
                "blocks.2.expand.w",
                "blocks.0.dw.b"
            ]
        );
    }

    #[test]
    fn numbered_ordinals_count_per_rule() {
        let rules =
            "^conv2d(_\\d+)?\\. => skip${1:ordinal}.\n^bn(_\\d+)?\\. => skipbn${1:ordinal}.\n";
        let out = rename_all(
            rules,
            &["conv2d.w", "bn.w", "conv2d_7.w", "bn_3.w", "conv2d_7.b"],
        );
        assert_eq!(
            out,
            ["skip0.w", "skipbn0.w", "skip1.w", "skipbn1.w", "skip1.b"]
        );
    }

    #[test]
    fn computed_groups_that_do_not_fit_are_errors_not_empty_text() {
        let rules = parse_rules(r"^(\w)_ => ${1-1}.").unwrap();
        let err = Renamer::new(&rules).apply("b_x").unwrap_err();
        assert!(
            err.contains("rename rule `^(\\w)_ => ${1-1}.`: `${1-1}` needs a number, got `b`"),
            "{err}"
        );
        let rules = parse_rules(r"^(\w+)_ => ${1:index}.").unwrap();
        let err = Renamer::new(&rules).apply("ab_x").unwrap_err();
        assert!(err.contains("one letter a-z, got `ab`"), "{err}");
        for bad in [
            r"^(a) => $2",
            r"^(a) => ${x}",
            r"^(a) => ${1:count}",
            r"^(a) => ${1-x}",
            "^(a) => ${1",
        ] {
            assert!(parse_rules(bad).is_err(), "{bad}");
        }
        assert_eq!(rename_all(r"^a => $$", &["ab"]), ["$b"]);
        let err = parse_rules(r"^(?P<b>a) => ${b c}").unwrap_err();
        assert!(err.contains("`b c` is not a group number or name"), "{err}");
        let err = parse_rules(r"^(?P<b>a) => ${c:index}").unwrap_err();
        assert!(
            err.contains("uses group `c`, which `^(?P<b>a)` does not capture"),
            "{err}"
        );
    }

    #[test]
    fn a_flat_index_splits_over_stages() {
        let rules = r"^blocks_(\d+)\. => blocks.${1:stages(1, 2,2,3)}.";
        let names = [
            "blocks_0.w",
            "blocks_1.w",
            "blocks_2.w",
            "blocks_3.w",
            "blocks_7.w",
        ];
        assert_eq!(
            rename_all(rules, &names),
            [
                "blocks.0.0.w",
                "blocks.1.0.w",
                "blocks.1.1.w",
                "blocks.2.0.w",
                "blocks.3.2.w"
            ]
        );
        let rules = parse_rules(rules).unwrap();
        let err = Renamer::new(&rules).apply("blocks_8.w").unwrap_err();
        assert!(err.contains("`8` is past the 8 positions"), "{err}");
        for bad in [
            r"^(a) => ${1:stages()}",
            r"^(a) => ${1:stages(1,0)}",
            r"^(a) => ${1:stages(1,x)}",
            r"^(a) => ${1:stages(1,2}",
        ] {
            assert!(parse_rules(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names_may_hold_underscores() {
        let rules = r"^block(?P<stage_no>\d) => stage${stage_no-1}.${stage_no:ordinal}";
        assert_eq!(
            rename_all(rules, &["block3", "block5"]),
            ["stage2.0", "stage4.1"]
        );
    }

    #[test]
    fn the_rules_that_matched_nothing_are_listed() {
        let rules = parse_rules("^a => x\n^zzz => y\n^b => z\n").unwrap();
        let mut renamer = Renamer::new(&rules);
        renamer.apply("a.w").unwrap();
        renamer.apply("b.w").unwrap();
        let unused: Vec<String> = renamer.unused().map(|r| r.to_string()).collect();
        assert_eq!(unused, ["^zzz => y"]);
    }
}
