//! `--rename RULES`: a small file of `pattern => replacement` lines applied
//! in order to every output name, so names can match a user's own module.

use regex::Regex;

/// Parses rules: one `regex => replacement` per line; blank lines and lines
/// starting with `#` are skipped. Replacements use `$1`, `${name}`.
pub fn parse_rules(text: &str) -> Result<Vec<(Regex, String)>, String> {
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
        let regex = Regex::new(pattern.trim()).map_err(|e| format!("line {}: {e}", number + 1))?;
        rules.push((regex, replacement.trim().to_string()));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order_with_groups() {
        let rules = parse_rules(
            "# timm names\n^efficientnet_tiny\\. => backbone.\n\n(\\w+)_bn\\.(\\w+) => ${1}.bn.$2\n",
        )
        .unwrap();
        let mut name = "efficientnet_tiny.stem_bn.weight".to_string();
        for (re, to) in &rules {
            name = re.replace_all(&name, to.as_str()).into_owned();
        }
        assert_eq!(name, "backbone.stem.bn.weight");
        assert!(parse_rules("no arrow here").unwrap_err().contains("line 1"));
        assert!(parse_rules("( => x").is_err());
    }
}
