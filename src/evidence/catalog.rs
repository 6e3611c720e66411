//! The evidence query catalog: the SQL files under `evidence/`, embedded in
//! the binary, with the header each file opens with.
//!
//! A header is a block of `-- Key: text` comment lines, where an indented
//! `--   text` line continues the previous key. Keys: `Question`, `Controls`
//! (comma-separated), `Parameter NAME` (one per parameter other than the
//! period), `Period` and `Rows`. Parameters are ClickHouse query parameters
//! (`{name:Type}`); `from` and `to` are the period.

use super::EvidenceError;

/// The embedded SQL files, by query name.
const FILES: [(&str, &str); 11] = [
    (
        "workflow-trail",
        include_str!("../../evidence/workflow-trail.sql"),
    ),
    (
        "actions-by-credential",
        include_str!("../../evidence/actions-by-credential.sql"),
    ),
    (
        "unauthorized-actions",
        include_str!("../../evidence/unauthorized-actions.sql"),
    ),
    (
        "unattended-write-actions",
        include_str!("../../evidence/unattended-write-actions.sql"),
    ),
    (
        "rejected-and-incomplete-workflows",
        include_str!("../../evidence/rejected-and-incomplete-workflows.sql"),
    ),
    (
        "agent-inventory",
        include_str!("../../evidence/agent-inventory.sql"),
    ),
    (
        "model-version-changes",
        include_str!("../../evidence/model-version-changes.sql"),
    ),
    (
        "credential-usage",
        include_str!("../../evidence/credential-usage.sql"),
    ),
    (
        "triggers-by-source",
        include_str!("../../evidence/triggers-by-source.sql"),
    ),
    ("redactions", include_str!("../../evidence/redactions.sql")),
    (
        "integrity-status",
        include_str!("../../evidence/integrity-status.sql"),
    ),
];

/// Names of the query parameters that hold the period.
pub const PERIOD_PARAMETERS: [&str; 2] = ["from", "to"];

/// One evidence query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub name: &'static str,
    pub sql: &'static str,
    /// The question the query answers.
    pub question: String,
    /// The controls it supports, such as `SOC 2 CC6.1`.
    pub controls: Vec<String>,
    /// Parameters other than the period, in the order of the header.
    pub parameters: Vec<Parameter>,
    /// The time column the period selects on, or `None` when the query
    /// takes no period.
    pub period: Option<String>,
    /// Description of one row.
    pub rows: String,
}

/// A query parameter other than the period.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    /// ClickHouse type, as written in the SQL.
    pub type_name: String,
    pub description: String,
}

impl Query {
    /// Returns whether the query takes `--from` and `--to`.
    pub fn uses_period(&self) -> bool {
        self.period.is_some()
    }
}

/// Returns every query, in catalog order.
pub fn catalog() -> Vec<Query> {
    FILES
        .iter()
        .map(|(name, sql)| {
            parse(name, sql)
                .unwrap_or_else(|error| panic!("embedded evidence query {name}: {error}"))
        })
        .collect()
}

/// Finds the query called `name`.
pub fn find(name: &str) -> Result<Query, EvidenceError> {
    catalog()
        .into_iter()
        .find(|query| query.name == name)
        .ok_or_else(|| EvidenceError::UnknownQuery {
            name: name.to_owned(),
            known: FILES
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses the header of one SQL file and checks it against the parameters
/// the SQL uses.
pub fn parse(name: &'static str, sql: &'static str) -> Result<Query, String> {
    let fields = header_fields(sql);
    let field = |key: &str| {
        fields
            .iter()
            .find(|(found, _)| found == key)
            .map(|(_, text)| text.clone())
    };
    let used = sql_parameters(sql);
    let uses_period = PERIOD_PARAMETERS
        .iter()
        .all(|period| used.iter().any(|(name, _)| name == period));
    let mut parameters = Vec::new();
    for (key, description) in &fields {
        let Some(parameter) = key.strip_prefix("Parameter ") else {
            continue;
        };
        let (_, type_name) = used
            .iter()
            .find(|(used_name, _)| used_name == parameter)
            .ok_or_else(|| {
                format!("header names parameter {parameter}, which the SQL does not use")
            })?;
        parameters.push(Parameter {
            name: parameter.to_owned(),
            type_name: type_name.clone(),
            description: description.clone(),
        });
    }
    for (used_name, _) in &used {
        let declared = parameters
            .iter()
            .any(|parameter| &parameter.name == used_name);
        if !declared && !PERIOD_PARAMETERS.contains(&used_name.as_str()) {
            return Err(format!(
                "the SQL uses parameter {used_name}, which the header does not describe"
            ));
        }
    }
    let period = field("Period").filter(|_| uses_period);
    Ok(Query {
        name,
        sql,
        question: field("Question").ok_or("the header has no Question")?,
        controls: field("Controls")
            .ok_or("the header has no Controls")?
            .split(',')
            .map(|control| control.trim().to_owned())
            .collect(),
        parameters,
        period,
        rows: field("Rows").ok_or("the header has no Rows")?,
    })
}

/// Collects the `-- Key: text` fields of the comment block that opens
/// `sql`.
fn header_fields(sql: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in sql.lines() {
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        if let Some(continued) = comment.strip_prefix("   ") {
            if let Some((_, text)) = fields.last_mut() {
                text.push(' ');
                text.push_str(continued.trim());
            }
            continue;
        }
        if let Some((key, text)) = comment.trim().split_once(':') {
            fields.push((key.trim().to_owned(), text.trim().to_owned()));
        }
    }
    fields
}

/// Finds the `{name:Type}` query parameters of `sql`, each once, in order
/// of first use.
pub fn sql_parameters(sql: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut rest = sql;
    while let Some(start) = rest.find('{') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('}') else { break };
        if let Some((name, type_name)) = rest[..end].split_once(':')
            && is_parameter_name(name)
            && !found.iter().any(|(known, _)| known == name)
        {
            found.push((name.to_owned(), type_name.trim().to_owned()));
        }
    }
    found
}

fn is_parameter_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses() {
        let queries = catalog();
        assert_eq!(queries.len(), FILES.len());
        for query in &queries {
            assert!(
                query.question.ends_with('?'),
                "{}: {}",
                query.name,
                query.question
            );
            assert!(!query.controls.is_empty(), "{}", query.name);
        }
    }

    #[test]
    fn controls_are_known() {
        let known = [
            "SOC 2 CC6.1",
            "SOC 2 CC6.2",
            "SOC 2 CC6.3",
            "SOC 2 CC7.2",
            "SOC 2 CC8.1",
            "ISO 27001 A.8.15",
            "HIPAA 164.312(b)",
        ];
        for query in catalog() {
            for control in &query.controls {
                assert!(
                    known.contains(&control.as_str()),
                    "{}: unknown control {control:?}",
                    query.name
                );
            }
        }
    }

    #[test]
    fn parameters_declared() {
        let trail = find("workflow-trail").unwrap();
        assert_eq!(trail.parameters.len(), 1);
        assert_eq!(trail.parameters[0].name, "workflow_id");
        assert_eq!(trail.parameters[0].type_name, "String");
        assert!(!trail.uses_period());
        let by_credential = find("actions-by-credential").unwrap();
        assert_eq!(by_credential.parameters[0].name, "credential_id");
        assert!(by_credential.uses_period());
    }

    #[test]
    fn undeclared_parameter_rejected() {
        let error = parse(
            "bad",
            "-- Question: q?\n-- Controls: SOC 2 CC6.1\n-- Rows: r\nSELECT {x:String}",
        )
        .unwrap_err();
        assert!(error.contains("parameter x"), "{error}");
    }

    #[test]
    fn parameters_found_in_sql() {
        let found =
            sql_parameters("SELECT {a:String}, '{16}', {b:DateTime64(9, 'UTC')}, {a:String}");
        assert_eq!(
            found,
            vec![
                ("a".to_owned(), "String".to_owned()),
                ("b".to_owned(), "DateTime64(9, 'UTC')".to_owned())
            ]
        );
    }

    #[test]
    fn unknown_query_lists_names() {
        let error = find("nope").unwrap_err().to_string();
        assert!(
            error.contains("nope") && error.contains("workflow-trail"),
            "{error}"
        );
    }
}
