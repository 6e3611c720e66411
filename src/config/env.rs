//! Environment overrides of the YAML tree.

use serde_yaml_ng::{Mapping, Value};

use super::{Config, ConfigError};

/// Fixed short names and the setting each one sets.
pub const ALIASES: [(&str, &str); 8] = [
    ("AGENT_LEDGER_SETTLE", "assembler.settle"),
    ("AGENT_LEDGER_ROOT_WAIT", "assembler.root_wait"),
    ("AGENT_LEDGER_OTLP_GRPC_ADDR", "otlp.grpc_addr"),
    ("AGENT_LEDGER_OTLP_HTTP_ADDR", "otlp.http_addr"),
    ("AGENT_LEDGER_LOG_FORMAT", "log.format"),
    ("AGENT_LEDGER_INSTANCE_ID", "seal.instance_id"),
    ("AGENT_LEDGER_SIGNING_KEY_FILE", "seal.signing_key_file"),
    ("AGENT_LEDGER_CHECKPOINT_DIR", "seal.checkpoint_dir"),
];

/// Settings written either as one value or as a map of values: the
/// variable of the setting itself (`AGENT_LEDGER_CLICKHOUSE_RETENTION`) sets
/// every entry of the map, and the variable of one entry sets that entry.
pub const ONE_OR_MANY: [&str; 1] = ["clickhouse.retention"];

/// Applies every `AGENT_LEDGER_*` variable that names a setting; returns
/// the variables applied.
pub fn apply(
    tree: &mut Value,
    vars: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let paths = setting_paths();
    for setting in ONE_OR_MANY {
        expand_one_value(tree, setting, &paths, vars);
    }
    for (path, default) in paths {
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
            applied.push((key.clone(), raw.clone()));
        }
    }
    Ok(applied)
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

/// Writes a setting given as one value (in the file, or in the setting's
/// own variable) into each entry of its map, so that a variable naming one
/// entry changes that entry only.
fn expand_one_value(
    tree: &mut Value,
    setting: &str,
    paths: &[(String, Value)],
    vars: &[(String, String)],
) {
    let from_env = vars
        .iter()
        .find(|(key, _)| *key == env_name(setting))
        .map(|(_, raw)| Value::from(raw.trim()));
    let from_file = get(tree, setting)
        .filter(|value| !value.is_mapping() && !value.is_null())
        .cloned();
    let Some(value) = from_env.or(from_file) else {
        return;
    };
    let prefix = format!("{setting}.");
    // `set` replaces the scalar on its way down with a map.
    for (path, _) in paths.iter().filter(|(path, _)| path.starts_with(&prefix)) {
        set(tree, path, value.clone());
    }
}

fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |node, part| node.get(part))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn applied(pairs: &[(&str, &str)]) -> Value {
        let mut tree = Value::Mapping(Mapping::new());
        apply(&mut tree, &vars(pairs)).expect("variables apply");
        tree
    }

    fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(tree, |node, key| node.get(key))
    }

    #[test]
    fn env_name_from_path() {
        let cases = [
            (
                "clickhouse.batch_rows",
                "AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS",
            ),
            (
                "otlp.max_request_size",
                "AGENT_LEDGER_OTLP_MAX_REQUEST_SIZE",
            ),
            ("assembler.settle", "AGENT_LEDGER_ASSEMBLER_SETTLE"),
        ];
        for (path, expected) in cases {
            assert_eq!(env_name(path), expected, "path {path}");
        }
    }

    #[test]
    fn aliases_target_settings() {
        let paths: Vec<String> = setting_paths().into_iter().map(|(path, _)| path).collect();
        for (alias, target) in ALIASES {
            assert!(
                paths.iter().any(|path| path == target),
                "alias {alias} targets unknown setting {target}"
            );
        }
    }

    #[test]
    fn setting_paths_include_password() {
        let paths: Vec<String> = setting_paths().into_iter().map(|(path, _)| path).collect();

        assert!(
            paths.iter().any(|path| path == "clickhouse.password"),
            "the password has a variable although it is never serialized"
        );
    }

    #[test]
    fn apply_converts_to_default_type() {
        let tree = applied(&[
            ("AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS", " 500 "),
            ("AGENT_LEDGER_CLICKHOUSE_CREATE_SCHEMA", "false"),
            ("AGENT_LEDGER_PRESETS_ENABLED", "genai, ,openinference"),
            ("AGENT_LEDGER_ASSEMBLER_SETTLE", "500ms"),
        ]);

        let cases = [
            ("clickhouse.batch_rows", Value::from(500u64)),
            ("clickhouse.create_schema", Value::Bool(false)),
            (
                "presets.enabled",
                Value::Sequence(vec![Value::from("genai"), Value::from("openinference")]),
            ),
            ("assembler.settle", Value::from("500ms")),
        ];
        for (path, expected) in cases {
            assert_eq!(lookup(&tree, path), Some(&expected), "setting {path}");
        }
    }

    #[test]
    fn apply_path_name_before_alias() {
        let orders = [
            (
                "path name first",
                [
                    ("AGENT_LEDGER_ASSEMBLER_ROOT_WAIT", "20m"),
                    ("AGENT_LEDGER_ROOT_WAIT", "30m"),
                ],
            ),
            (
                "alias first",
                [
                    ("AGENT_LEDGER_ROOT_WAIT", "30m"),
                    ("AGENT_LEDGER_ASSEMBLER_ROOT_WAIT", "20m"),
                ],
            ),
        ];
        for (name, pairs) in orders {
            let tree = applied(&pairs);

            assert_eq!(
                lookup(&tree, "assembler.root_wait"),
                Some(&Value::from("20m")),
                "case {name}"
            );
        }
    }

    #[test]
    fn apply_keeps_file_values() {
        let mut tree: Value =
            serde_yaml_ng::from_str("clickhouse:\n  database: audit\n").expect("YAML parses");

        apply(
            &mut tree,
            &vars(&[("AGENT_LEDGER_CLICKHOUSE_USER", "writer")]),
        )
        .expect("variables apply");

        assert_eq!(
            lookup(&tree, "clickhouse.database"),
            Some(&Value::from("audit")),
            "file value beside the override"
        );
        assert_eq!(
            lookup(&tree, "clickhouse.user"),
            Some(&Value::from("writer")),
            "override"
        );
    }

    #[test]
    fn apply_rejects_invalid_numbers() {
        let mut tree = Value::Mapping(Mapping::new());

        let result = apply(
            &mut tree,
            &vars(&[("AGENT_LEDGER_ASSEMBLER_MAX_BUFFERED_SPANS", "1e6")]),
        );

        let error = result.expect_err("not a whole number");
        let message = error.to_string();
        assert!(
            message.contains("AGENT_LEDGER_ASSEMBLER_MAX_BUFFERED_SPANS"),
            "message names the variable: {message}"
        );
        assert!(
            message.contains("1e6"),
            "message shows the value: {message}"
        );
    }
}
