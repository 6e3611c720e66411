//! Evidence output: a header that says what was asked, for which period,
//! when and by which version, then the rows as a text table, CSV, JSON or
//! Markdown.

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};

use super::result::{ResultSet, text};

/// Output format of an evidence query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

impl Format {
    /// File name extension for the format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Markdown => "md",
        }
    }
}

/// Description of an output, written before its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub query: String,
    pub question: String,
    pub controls: Vec<String>,
    /// Parameters other than the period, as given.
    pub parameters: Vec<(String, String)>,
    /// The period and the time it selects on; `None` for a query without one.
    pub period: Option<String>,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub row_count: usize,
    pub database: String,
    pub version: &'static str,
}

impl Header {
    /// Lists the header as labelled fields, in output order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let parameters: Vec<String> = self
            .parameters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        vec![
            ("query", self.query.clone()),
            ("question", self.question.clone()),
            ("controls", self.controls.join(", ")),
            (
                "parameters",
                if parameters.is_empty() {
                    "none".to_owned()
                } else {
                    parameters.join(", ")
                },
            ),
            (
                "period",
                self.period
                    .clone()
                    .unwrap_or_else(|| "not used by this query".to_owned()),
            ),
            ("generated at", self.generated_at.clone()),
            ("row count", self.row_count.to_string()),
            ("database", self.database.clone()),
            ("agent-ledger version", self.version.to_owned()),
        ]
    }
}

/// Renders `result` in `format`, header first.
pub fn render(format: Format, header: &Header, result: &ResultSet) -> String {
    match format {
        Format::Table => table(header, result),
        Format::Csv => csv(header, result),
        Format::Json => json(header, result),
        Format::Markdown => markdown(header, result),
    }
}

fn table(header: &Header, result: &ResultSet) -> String {
    let mut out = String::new();
    for (label, value) in header.fields() {
        out.push_str(&format!("{label}: {value}\n"));
    }
    out.push('\n');
    out.push_str(&grid(result, presets::ASCII_FULL_CONDENSED, text).to_string());
    out.push('\n');
    out
}

fn markdown(header: &Header, result: &ResultSet) -> String {
    let mut out = format!("# Evidence: {}\n\n", header.query);
    for (label, value) in header.fields() {
        out.push_str(&format!("- **{label}:** {}\n", markdown_cell(&value)));
    }
    out.push('\n');
    out.push_str(
        &grid(result, presets::ASCII_MARKDOWN, |value| {
            markdown_cell(&text(value))
        })
        .to_string(),
    );
    out.push('\n');
    out
}

fn grid(
    result: &ResultSet,
    preset: comfy_table::TableStyle,
    cell: impl Fn(&Value) -> String,
) -> Table {
    let mut table = Table::new();
    table
        .load_style(preset)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(result.columns.iter().map(|column| column.name.clone()));
    for row in &result.rows {
        table.add_row(row.iter().map(&cell));
    }
    table
}

/// Escapes a Markdown table cell: pipes escaped, line breaks turned into
/// spaces.
fn markdown_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn csv(header: &Header, result: &ResultSet) -> String {
    let mut out = String::new();
    for (label, value) in header.fields() {
        out.push_str(&format!(
            "# {label}: {}\n",
            value.replace(['\r', '\n'], " ")
        ));
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let names = result.columns.iter().map(|column| column.name.as_str());
    // Writing to a Vec cannot fail.
    writer.write_record(names).expect("CSV into memory");
    for row in &result.rows {
        writer
            .write_record(row.iter().map(text))
            .expect("CSV into memory");
    }
    let body = writer.into_inner().expect("CSV into memory");
    out.push_str(&String::from_utf8_lossy(&body));
    out
}

fn json(header: &Header, result: &ResultSet) -> String {
    let fields: serde_json::Map<String, Value> = header
        .fields()
        .into_iter()
        .map(|(label, value)| (label.replace(' ', "_"), Value::String(value)))
        .collect();
    let columns: Vec<Value> = result
        .columns
        .iter()
        .map(|column| json!({ "name": column.name, "type": column.type_name }))
        .collect();
    let document = json!({ "header": fields, "columns": columns, "rows": result.rows });
    let mut out = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::result::Column;

    fn sample() -> (Header, ResultSet) {
        let header = Header {
            query: "q".to_owned(),
            question: "Which?".to_owned(),
            controls: vec!["SOC 2 CC6.1".to_owned()],
            parameters: vec![("credential_id".to_owned(), "c-1".to_owned())],
            period: Some("from a to b".to_owned()),
            generated_at: "2026-01-01T00:00:00Z".to_owned(),
            row_count: 1,
            database: "agent_ledger".to_owned(),
            version: "0.1.0",
        };
        let result = ResultSet {
            columns: vec![
                Column {
                    name: "Tool".to_owned(),
                    type_name: "String".to_owned(),
                },
                Column {
                    name: "Scopes".to_owned(),
                    type_name: "Array(String)".to_owned(),
                },
            ],
            rows: vec![vec![json!("a|b, \"c\""), json!(["x", "y"])]],
        };
        (header, result)
    }

    #[test]
    fn csv_quotes_cells() {
        let (header, result) = sample();
        let out = render(Format::Csv, &header, &result);
        assert!(out.starts_with("# query: q\n# question: Which?\n"), "{out}");
        assert!(out.contains("# parameters: credential_id=c-1\n"), "{out}");
        assert!(
            out.ends_with("Tool,Scopes\n\"a|b, \"\"c\"\"\",\"[\"\"x\"\",\"\"y\"\"]\"\n"),
            "{out}"
        );
    }

    #[test]
    fn markdown_escapes_pipes() {
        let (header, result) = sample();
        let out = render(Format::Markdown, &header, &result);
        assert!(
            out.starts_with("# Evidence: q\n\n- **query:** q\n"),
            "{out}"
        );
        assert!(out.contains("a\\|b"), "{out}");
        assert!(out.contains("| Tool"), "{out}");
    }

    #[test]
    fn json_keeps_values_typed() {
        let (header, result) = sample();
        let document: Value =
            serde_json::from_str(&render(Format::Json, &header, &result)).unwrap();
        assert_eq!(document["header"]["row_count"], "1");
        assert_eq!(document["header"]["agent-ledger_version"], "0.1.0");
        assert_eq!(document["columns"][1]["type"], "Array(String)");
        assert_eq!(document["rows"][0][1], json!(["x", "y"]));
    }

    #[test]
    fn table_lists_header_then_rows() {
        let (header, result) = sample();
        let out = render(Format::Table, &header, &result);
        assert!(out.contains("row count: 1\n"), "{out}");
        assert!(out.contains("[\"x\",\"y\"]"), "{out}");
    }
}
