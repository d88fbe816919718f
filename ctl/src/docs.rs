//! Reading the documents of `apply|create|replace|delete -f FILE|DIR|-`: multi-document YAML,
//! JSON (one value or several in a row), and `kind: List` objects, each named `FILE#N` (N counts
//! the objects of the file from 1) so that errors can say which one is wrong.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

use crate::config::first_line;

/// One object read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Where it came from: `pools.yaml#2`, `-#1` for standard input.
    pub source: String,
    /// The object.
    pub value: Value,
}

/// A file that cannot be read or is not YAML or JSON.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The file or directory cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing in it.
    #[error("{0}: no objects in it (the file is empty); give a file with at least one resource")]
    Empty(String),
    /// Not YAML or JSON.
    #[error("{file}: not valid YAML or JSON: {why}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's complaint (first line).
        why: String,
    },
    /// A document that is not a mapping with apiVersion and kind.
    #[error("{0}: not a resource: expected a mapping with apiVersion, kind, metadata and spec")]
    NotAnObject(String),
}

/// Reads every object of `path`: a file, every `.yaml`, `.yml` and `.json` file of a directory
/// (in name order), or standard input for `-`.
pub fn read_path(path: &str) -> Result<Vec<Doc>, DocError> {
    let read_err = |source| DocError::Read {
        path: path.to_string(),
        source,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        return parse_documents(&text, "-");
    }
    let p = Path::new(path);
    if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| DocError::Read {
                path: name.clone(),
                source,
            })?;
            docs.extend(parse_documents(&text, &name)?);
        }
        if docs.is_empty() {
            return Err(DocError::Empty(path.to_string()));
        }
        return Ok(docs);
    }
    let text = std::fs::read_to_string(p).map_err(read_err)?;
    parse_documents(&text, path)
}

/// Splits `text` into objects: JSON when it starts with `{` or `[`, else multi-document YAML;
/// empty documents are skipped and `kind: List` is replaced by its items.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Doc>, DocError> {
    let syntax = |why: String| DocError::Syntax {
        file: source.to_string(),
        why: first_line(&why),
    };
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(|e| syntax(e.to_string()))?
    } else {
        serde_saphyr::from_multiple::<Option<Value>>(text)
            .map_err(|e| syntax(e.to_string()))?
            .into_iter()
            .flatten()
            .collect()
    };
    let mut objects = Vec::new();
    for v in values {
        match v {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                match o.get("items") {
                    Some(Value::Array(items)) => objects.extend(items.iter().cloned()),
                    _ => objects.push(v),
                }
            }
            other => objects.push(other),
        }
    }
    if objects.is_empty() {
        return Err(DocError::Empty(source.to_string()));
    }
    objects
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let source = format!("{source}#{}", i + 1);
            if value.is_object() {
                Ok(Doc { source, value })
            } else {
                Err(DocError::NotAnObject(source))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_are_numbered_from_one_and_empty_ones_skipped() {
        let docs = parse_documents("---\nkind: A\n---\n---\nkind: B\n...\n", "f.yaml").unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(names, ["f.yaml#1", "f.yaml#2"]);
        assert_eq!(docs[1].value["kind"], "B");
    }

    #[test]
    fn a_list_is_replaced_by_its_items() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: List\nitems:\n- {kind: A}\n- {kind: B}\n",
            "l.yaml",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].source, "l.yaml#1");
    }

    #[test]
    fn json_may_hold_several_values_in_a_row() {
        let docs = parse_documents("{\"kind\": \"A\"}\n{\"kind\": \"B\"}", "-").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].source, "-#2");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse_documents("\n# nothing\n", "e.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("e.yaml: no objects"), "{e}");
    }

    #[test]
    fn text_that_is_not_yaml_is_a_one_line_error() {
        let e = parse_documents("kind: [unclosed\n  x: {\n", "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml: not valid YAML or JSON"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn a_scalar_document_is_not_a_resource() {
        let e = parse_documents("just text\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.yaml#1: not a resource"), "{e}");
    }
}
