//! Query results of any shape, read from ClickHouse's
//! `JSONCompactEachRowWithNamesAndTypes` output: a line with the column
//! names, a line with their types, then one JSON array per row.

use serde_json::Value;

/// The ClickHouse output format the results are read from.
pub const FORMAT: &str = "JSONCompactEachRowWithNamesAndTypes";

/// Columns and rows of one query result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// A result column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    /// ClickHouse type, such as `DateTime64(9, 'UTC')`.
    pub type_name: String,
}

impl ResultSet {
    /// Parses the output. An error message names what was malformed.
    pub fn parse(bytes: &[u8]) -> Result<ResultSet, String> {
        let mut lines = serde_json::Deserializer::from_slice(bytes).into_iter::<Vec<Value>>();
        let mut next_line = |what: &str| -> Result<Option<Vec<Value>>, String> {
            lines
                .next()
                .transpose()
                .map_err(|error| format!("invalid {what} line: {error}"))
        };
        let Some(names) = next_line("column name")? else {
            return Ok(ResultSet::default());
        };
        let types = next_line("column type")?.ok_or("the column types are missing")?;
        if names.len() != types.len() {
            return Err(format!(
                "{} column names but {} column types",
                names.len(),
                types.len()
            ));
        }
        let columns = names
            .iter()
            .zip(&types)
            .map(|(name, type_name)| Column {
                name: text(name),
                type_name: text(type_name),
            })
            .collect();
        let mut rows = Vec::new();
        while let Some(row) = next_line("row")? {
            if row.len() != names.len() {
                return Err(format!(
                    "a row has {} values for {} columns",
                    row.len(),
                    names.len()
                ));
            }
            rows.push(row);
        }
        Ok(ResultSet { columns, rows })
    }

    /// Returns the index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// Returns the values of column `name`, one per row.
    pub fn values(&self, name: &str) -> Vec<Value> {
        match self.column(name) {
            Some(index) => self.rows.iter().map(|row| row[index].clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// Formats a value as one line of text: strings without quotes, `NULL` as
/// an empty cell, arrays and maps as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_rows_parsed() {
        let output = b"[\"a\",\"b\"]\n[\"UInt8\",\"Array(String)\"]\n[1,[\"x\"]]\n[2,[]]\n";
        let result = ResultSet::parse(output).unwrap();
        assert_eq!(result.columns[1].type_name, "Array(String)");
        assert_eq!(result.rows.len(), 2);
        assert_eq!(text(&result.rows[0][1]), "[\"x\"]");
        assert_eq!(result.values("a"), vec![Value::from(1), Value::from(2)]);
    }

    #[test]
    fn ragged_row_rejected() {
        let error = ResultSet::parse(b"[\"a\"]\n[\"UInt8\"]\n[1,2]\n").unwrap_err();
        assert!(error.contains("2 values for 1 columns"), "{error}");
    }
}
