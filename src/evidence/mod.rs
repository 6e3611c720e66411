//! Evidence queries: the SQL questions auditors put to the audit trail, and
//! output files whose header records the question, the period and the time.
//!
//! The queries are the SQL files under `evidence/`, embedded in the binary
//! ([`mod@catalog`]). [`prepare`] checks a request against the query (known
//! name, every parameter given, a valid period); [`execute`] binds the
//! parameters as ClickHouse query parameters, never into the SQL text, and
//! reads the result in a generic form ([`result::ResultSet`]), so any
//! query's columns come back without a row type. [`pack`] runs every query
//! for a period into a folder with a SHA-256 manifest.

pub mod catalog;
pub mod pack;
pub mod period;
pub mod render;
pub mod result;

use chrono::{DateTime, Utc};

pub use catalog::{Parameter, Query, catalog, find};
pub use period::Period;
pub use render::{Format, Header};
pub use result::ResultSet;

/// An evidence failure; the message names the value and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "unknown evidence query {name:?}; the queries are: {known} (see `agent-ledger evidence list`)"
    )]
    UnknownQuery { name: String, known: String },
    #[error("query {query} needs --param {name}=VALUE: {description}")]
    MissingParameter {
        query: String,
        name: String,
        description: String,
    },
    #[error("query {query} has no parameter {name:?}; its parameters: {known}")]
    UnknownParameter {
        query: String,
        name: String,
        known: String,
    },
    #[error(
        "invalid --param {text:?}: write it as NAME=VALUE, for example --param credential_id=cred-1"
    )]
    InvalidParameter { text: String },
    #[error("query {query} needs a period: give --from and --to, for example --from -30d --to now")]
    MissingPeriod { query: String },
    #[error(
        "invalid time {value:?}: use RFC 3339 (2026-01-31T00:00:00Z), a date (2026-01-31), now, \
         or a time before now such as -30d or -12h"
    )]
    InvalidTime { value: String },
    #[error("empty period: --from {from} is not before --to {to}")]
    EmptyPeriod { from: String, to: String },
    #[error("query {query} failed in ClickHouse: {source}")]
    Query {
        query: String,
        source: clickhouse::error::Error,
    },
    #[error("query {query} returned output that could not be read: {message}")]
    InvalidResult { query: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "output folder {path} is not empty; choose a new folder so that no earlier evidence is overwritten"
    )]
    FolderNotEmpty { path: std::path::PathBuf },
}

/// A query with its parameters checked, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub query: Query,
    /// Parameters other than the period, in the query's order.
    pub parameters: Vec<(String, String)>,
    pub period: Option<Period>,
}

/// Splits `NAME=VALUE` arguments.
pub fn parse_parameters(arguments: &[String]) -> Result<Vec<(String, String)>, EvidenceError> {
    arguments
        .iter()
        .map(|text| match text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.to_owned()))
            }
            _ => Err(EvidenceError::InvalidParameter { text: text.clone() }),
        })
        .collect()
}

/// Checks `parameters` and `period` against `query`. Parameters that the
/// query does not take are rejected unless `allow_extra`, which a pack
/// sets because one set of parameters serves every query.
pub fn prepare(
    query: Query,
    parameters: &[(String, String)],
    period: Option<Period>,
    allow_extra: bool,
) -> Result<Request, EvidenceError> {
    if !allow_extra {
        reject_unknown_parameters(&query, parameters)?;
    }
    let mut bound = Vec::new();
    for parameter in &query.parameters {
        let value = parameters
            .iter()
            .rev()
            .find(|(name, _)| *name == parameter.name)
            .map(|(_, value)| value);
        let Some(value) = value else {
            return Err(EvidenceError::MissingParameter {
                query: query.name.to_owned(),
                name: parameter.name.clone(),
                description: parameter.description.clone(),
            });
        };
        bound.push((parameter.name.clone(), value.clone()));
    }
    if query.uses_period() && period.is_none() {
        return Err(EvidenceError::MissingPeriod {
            query: query.name.to_owned(),
        });
    }
    let period = period.filter(|_| query.uses_period());
    Ok(Request {
        query,
        parameters: bound,
        period,
    })
}

fn reject_unknown_parameters(
    query: &Query,
    parameters: &[(String, String)],
) -> Result<(), EvidenceError> {
    for (name, _) in parameters {
        if !query
            .parameters
            .iter()
            .any(|parameter| &parameter.name == name)
        {
            let known: Vec<&str> = query
                .parameters
                .iter()
                .map(|parameter| parameter.name.as_str())
                .collect();
            return Err(EvidenceError::UnknownParameter {
                query: query.name.to_owned(),
                name: name.clone(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// Runs `request` and reads its rows.
pub async fn execute(
    client: &clickhouse::Client,
    request: &Request,
) -> Result<ResultSet, EvidenceError> {
    let name = request.query.name;
    let mut query = client
        .query_raw(request.query.sql)
        .with_setting("output_format_json_quote_64bit_integers", "0");
    for (parameter, value) in &request.parameters {
        query = query.param(parameter, value.as_str());
    }
    if let Some(period) = &request.period {
        query = query
            .param("from", period::bind_value(period.from))
            .param("to", period::bind_value(period.to));
    }
    let failed = |source| EvidenceError::Query {
        query: name.to_owned(),
        source,
    };
    let bytes = query
        .fetch_bytes(result::FORMAT)
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    ResultSet::parse(&bytes).map_err(|message| EvidenceError::InvalidResult {
        query: name.to_owned(),
        message,
    })
}

/// Builds the header of `request`'s output.
pub fn header(
    request: &Request,
    result: &ResultSet,
    generated_at: DateTime<Utc>,
    database: &str,
) -> Header {
    let query = &request.query;
    let period = match (&request.period, &query.period) {
        (Some(period), Some(selects_on)) => {
            Some(format!("{}; selects on {selects_on}", period.describe()))
        }
        _ => None,
    };
    Header {
        query: query.name.to_owned(),
        question: query.question.clone(),
        controls: query.controls.clone(),
        parameters: request.parameters.clone(),
        period,
        generated_at: period::rfc3339(generated_at),
        row_count: result.rows.len(),
        database: database.to_owned(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period() -> Option<Period> {
        Some(Period::parse("2026-01-01", "2026-02-01", Utc::now()).unwrap())
    }

    #[test]
    fn missing_parameter_named() {
        let error = prepare(find("actions-by-credential").unwrap(), &[], period(), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--param credential_id=VALUE"), "{error}");
    }

    #[test]
    fn unknown_parameter_rejected() {
        let parameters = parse_parameters(&["workflow=1".to_owned()]).unwrap();
        let error = prepare(find("workflow-trail").unwrap(), &parameters, None, false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"workflow\"") && error.contains("workflow_id"),
            "{error}"
        );
    }

    #[test]
    fn missing_period_rejected() {
        let error = prepare(find("redactions").unwrap(), &[], None, false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--from and --to"), "{error}");
    }

    #[test]
    fn parameter_without_value_rejected() {
        let error = parse_parameters(&["credential_id".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("NAME=VALUE"), "{error}");
    }

    #[test]
    fn period_dropped_for_query_without_one() {
        let parameters = parse_parameters(&["workflow_id=ab".to_owned()]).unwrap();
        let request = prepare(
            find("workflow-trail").unwrap(),
            &parameters,
            period(),
            false,
        )
        .unwrap();
        assert_eq!(request.period, None);
        assert_eq!(request.parameters, parameters);
    }
}
