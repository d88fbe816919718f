//! Output formats: kubectl-style tables for people, JSON and YAML for scripts.

use std::fmt::Write as _;

use serde::Serialize;

/// The `-o` formats every `get`-style command accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table of the default columns.
    #[default]
    Table,
    /// A table with more columns.
    Wide,
    /// JSON, one document (a `List` for several objects).
    Json,
    /// YAML, one document (a `List` for several objects).
    Yaml,
}

/// A table: headers and rows of cells, printed as kubectl does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (printed upper-case).
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers
                .into_iter()
                .map(|h| h.into().to_uppercase())
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra cells are an error in the caller.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        debug_assert!(row.len() <= self.headers.len(), "more cells than columns");
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
        self
    }

    /// Renders the table: every column as wide as its widest cell, three spaces between columns,
    /// no trailing white space.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain(std::iter::once(self.headers[i].chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A value that cannot be serialised, or a table format passed to [`serialise`].
#[derive(Debug, thiserror::Error)]
#[error("cannot print as {format:?}: {why}")]
pub struct SerialiseError {
    format: Format,
    why: String,
}

/// Serialises `value` as JSON or YAML for `-o json|yaml`.
pub fn serialise<T: Serialize>(value: &T, format: Format) -> Result<String, SerialiseError> {
    let err = |why: String| SerialiseError { format, why };
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| err(e.to_string())),
        Format::Yaml => serde_saphyr::to_string(value).map_err(|e| err(e.to_string())),
        Format::Table | Format::Wide => Err(err(
            "serialise is for -o json or -o yaml; tables are rendered with Table".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_like_kubectl() {
        let mut t = Table::new(["name", "cidr", "selector"]);
        t.row(["default-ipv4", "100.64.0.0/16", "all()"]);
        t.row(["p2", "fd00:1::/64", ""]);
        assert_eq!(
            t.render(),
            "NAME           CIDR            SELECTOR\n\
             default-ipv4   100.64.0.0/16   all()\n\
             p2             fd00:1::/64\n"
        );
    }

    #[test]
    fn an_empty_table_prints_its_headers() {
        assert_eq!(Table::new(["name"]).render(), "NAME\n");
    }

    #[test]
    fn json_and_yaml_carry_the_same_object() {
        let v = serde_json::json!({"kind": "IPPool", "spec": {"cidr": "100.64.0.0/16"}});
        let json: serde_json::Value =
            serde_json::from_str(&serialise(&v, Format::Json).unwrap()).unwrap();
        let yaml: serde_json::Value =
            serde_saphyr::from_str(&serialise(&v, Format::Yaml).unwrap()).unwrap();
        assert_eq!(json, v);
        assert_eq!(yaml, v);
    }
}
