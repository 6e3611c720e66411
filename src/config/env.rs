//! Environment overrides of the YAML tree.

use serde_yaml_ng::{Mapping, Value};

use super::{Config, ConfigError};

/// Fixed short names and the setting each one sets.
pub const ALIASES: [(&str, &str); 8] = [
    ("AGENT_LEDGER_SETTLE", "assembler.settle"),
    ("AGENT_LEDGER_ROOT_WAIT", "assembler.root_wait"),
    ("AGENT_LEDGER_OTLP_GRPC_ADDR", "otlp.grpc_addr"),
    ("AGENT_LEDGER_LOG_FORMAT", "log.format"),
    ("AGENT_LEDGER_INSTANCE_ID", "seal.instance_id"),
    ("AGENT_LEDGER_LEDGER_INSTANCE_ID", "seal.instance_id"),
    ("AGENT_LEDGER_SIGNING_KEY_FILE", "seal.signing_key_file"),
    ("AGENT_LEDGER_CHECKPOINT_DIR", "seal.checkpoint_dir"),
];

/// Applies every `AGENT_LEDGER_*` variable that names a setting.
pub fn apply(tree: &mut Value, vars: &[(String, String)]) -> Result<(), ConfigError> {
    for (path, default) in setting_paths() {
        let name = env_name(&path);
        let mut aliases = ALIASES
            .iter()
            .filter(|(_, target)| *target == path)
            .map(|(alias, _)| *alias);
        let found = vars
            .iter()
            .find(|(key, _)| *key == name)
            .or_else(|| aliases.find_map(|alias| vars.iter().find(|(key, _)| key == alias)));
        if let Some((key, raw)) = found {
            set(tree, &path, parse_value(key, raw, &default)?);
        }
    }
    Ok(())
}

/// `clickhouse.batch_rows` becomes `AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS`.
pub fn env_name(path: &str) -> String {
    format!("AGENT_LEDGER_{}", path.replace('.', "_").to_uppercase())
}

/// Every leaf setting path with its default value, from the default
/// configuration.
fn setting_paths() -> Vec<(String, Value)> {
    let mut defaults = serde_yaml_ng::to_value(Config::default()).unwrap_or(Value::Null);
    if let Value::Mapping(root) = &mut defaults
        && let Some(Value::Mapping(clickhouse)) = root.get_mut("clickhouse")
    {
        clickhouse.insert(Value::from("password"), Value::from(""));
    }
    let mut paths = Vec::new();
    collect_paths(&defaults, String::new(), &mut paths);
    paths
}

fn collect_paths(value: &Value, prefix: String, paths: &mut Vec<(String, Value)>) {
    match value {
        Value::Mapping(map) if !prefix.ends_with("custom") => {
            for (key, child) in map {
                let Some(key) = key.as_str() else { continue };
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_paths(child, path, paths);
            }
        }
        _ => paths.push((prefix, value.clone())),
    }
}

/// Converts the variable's text to the type of the setting's default: a
/// list from `[a, b]` or `a,b`, numbers and booleans parsed, anything else
/// kept as a string for serde to convert (durations, sizes, addresses).
fn parse_value(name: &str, raw: &str, default: &Value) -> Result<Value, ConfigError> {
    let trimmed = raw.trim();
    let invalid = |message: String| ConfigError::Env {
        name: name.to_owned(),
        value: raw.to_owned(),
        message,
    };
    match default {
        Value::Sequence(_) if trimmed.starts_with('[') => {
            serde_yaml_ng::from_str(trimmed).map_err(|error| invalid(error.to_string()))
        }
        Value::Sequence(_) => Ok(Value::Sequence(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(Value::from)
                .collect(),
        )),
        Value::Number(_) => trimmed
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| invalid("expected a whole number".to_owned())),
        Value::Bool(_) => trimmed
            .parse::<bool>()
            .map(Value::Bool)
            .map_err(|_| invalid("expected true or false".to_owned())),
        _ => Ok(Value::from(trimmed)),
    }
}

fn set(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else { return };
        let key = Value::from(*part);
        if index == parts.len() - 1 {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
}
