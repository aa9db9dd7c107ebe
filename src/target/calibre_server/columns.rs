//! A calibre source's custom columns in the server's library. calibre-server cannot create a
//! column without a restart, so the column must exist there first (made in calibre, or with
//! `calibredb add_custom_column` and a restart). At open each source column is matched to the
//! server's column of its label (the `custom_columns` command): one of the same definition
//! (datatype, several values or not, enumeration values, template:
//! [`Difference`](crate::calibre::custom_columns::Difference), as the direct calibre target
//! judges) takes the books' values; a missing or differing one takes none, and the run says so
//! once per column, as a warning. A book's values go with its `add empty` call, as the
//! `user_metadata` of calibre's `Metadata` ([`Columns::user_metadata`]).

use super::library::datetime;
use crate::calibre::custom_columns::{self, ColumnDef};
use crate::calibre::read::{ReadError, ReadOnlyDb, DEFAULT_BUSY_TIMEOUT};
use crate::metadata::CustomValue;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The server's columns that take a source column's values, by label: calibre's description
/// of each (`custom_column_label_map`), as `set_metadata` compares it.
#[derive(Debug, Default)]
pub struct Columns {
    by_label: HashMap<String, Map<String, Value>>,
}

/// The custom column definitions of the calibre library at `root`, read-only.
pub fn source_definitions(root: &Path) -> Result<Vec<ColumnDef>, ReadError> {
    let ro = ReadOnlyDb::of_library(root, DEFAULT_BUSY_TIMEOUT)?;
    let conn = ro.open()?;
    custom_columns::definitions(&conn).map_err(|source| ReadError::Query {
        path: ro.path().to_path_buf(),
        what: "reading the custom columns",
        source,
    })
}

impl Columns {
    /// Match the source's columns (`theirs`) to the server's (`label_map`: the
    /// `custom_columns` command's result), warning once per source column the server lacks or
    /// has as another column (`server`: how the warnings name the library).
    pub fn matched(theirs: &[ColumnDef], label_map: &Value, server: &str) -> Columns {
        let mut columns = Columns::default();
        for def in theirs {
            let Some(data) = label_map.get(&def.label).and_then(Value::as_object) else {
                tracing::warn!(
                    "{server}: the library has no custom column #{}: its values are not \
                     written (calibre-server cannot create a column: create it in calibre \
                     first, restart the server and run again)",
                    def.label
                );
                continue;
            };
            match def.difference(&definition_of(data)) {
                None => {
                    columns.by_label.insert(def.label.clone(), data.clone());
                }
                Some(d) => tracing::warn!(
                    "{server}: custom column #{} is not the source's column of that label \
                     ({d}): its values are not written",
                    def.label
                ),
            }
        }
        columns
    }

    /// calibre's `user_metadata` for a book's values (label → value): each column of the
    /// server that takes them, with `#value#` (and a series' index as `#extra#`).
    pub fn user_metadata(&self, values: &BTreeMap<String, CustomValue>) -> Map<String, Value> {
        let mut out = Map::new();
        for (label, value) in values {
            let Some(data) = self.by_label.get(label) else {
                continue;
            };
            let datatype = data.get("datatype").and_then(Value::as_str).unwrap_or("");
            let (v, extra) = match (value, datatype) {
                (CustomValue::Text(t), "datetime") => (
                    crate::calibre::dates::db_form(t).map_or_else(|| json!(t), |d| datetime(&d)),
                    Value::Null,
                ),
                (CustomValue::Text(t), _) => (json!(t), Value::Null),
                (CustomValue::Texts(list), _) => (json!(list), Value::Null),
                (CustomValue::Int(i), _) => (json!(i), Value::Null),
                (CustomValue::Float(f), _) => (json!(f), Value::Null),
                (CustomValue::Bool(b), _) => (json!(b), Value::Null),
                (CustomValue::Series { name, index }, _) => (json!(name), json!(index)),
            };
            let mut m = Map::new();
            for k in ["label", "name", "datatype", "display", "colnum"] {
                if let Some(x) = data.get(k) {
                    m.insert(k.into(), x.clone());
                }
            }
            // calibre's field metadata holds the separators where the label map has a bool.
            let seps = data.get("multiple_seps").cloned().unwrap_or(json!({}));
            m.insert("is_multiple".into(), seps);
            m.insert("is_custom".into(), json!(true));
            m.insert("#value#".into(), v);
            m.insert("#extra#".into(), extra);
            out.insert(format!("#{label}"), Value::Object(m));
        }
        out
    }
}

/// A column of the server's label map as a `custom_columns` row.
fn definition_of(data: &Map<String, Value>) -> ColumnDef {
    let text = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let flag = |k: &str| data.get(k).and_then(Value::as_bool).unwrap_or(false);
    ColumnDef {
        num: data.get("num").and_then(Value::as_i64).unwrap_or(0),
        label: text("label"),
        name: text("name"),
        datatype: text("datatype"),
        is_multiple: flag("is_multiple"),
        editable: flag("editable"),
        display: data
            .get("display")
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".into()),
        normalized: flag("normalized"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(label: &str, datatype: &str, display: &str) -> ColumnDef {
        ColumnDef {
            num: 1,
            label: label.into(),
            name: label.into(),
            datatype: datatype.into(),
            is_multiple: false,
            editable: true,
            display: display.into(),
            normalized: true,
        }
    }

    #[test]
    fn only_columns_of_the_same_definition_take_values() {
        let theirs = [
            def("shelf", "enumeration", r#"{"enum_values": ["a", "b"]}"#),
            def("read", "bool", "{}"),
            def("gone", "int", "{}"),
            def("series2", "series", "{}"),
        ];
        let map = json!({
            "shelf": {"label": "shelf", "datatype": "enumeration", "is_multiple": false,
                      "display": {"enum_values": ["a", "c"]}, "multiple_seps": {}, "num": 4},
            "read": {"label": "read", "datatype": "text", "is_multiple": false,
                     "display": {}, "multiple_seps": {}, "num": 5},
            "series2": {"label": "series2", "datatype": "series", "is_multiple": false,
                        "display": {}, "multiple_seps": {}, "num": 6}
        });
        let cols = Columns::matched(&theirs, &map, "server");
        let values = BTreeMap::from([
            ("shelf".to_string(), CustomValue::Text("a".into())),
            ("read".to_string(), CustomValue::Bool(true)),
            ("gone".to_string(), CustomValue::Int(3)),
            (
                "series2".to_string(),
                CustomValue::Series {
                    name: "S".into(),
                    index: 2.5,
                },
            ),
        ]);
        let um = cols.user_metadata(&values);
        assert_eq!(um.keys().collect::<Vec<_>>(), ["#series2"]);
        assert_eq!(um["#series2"]["#value#"], json!("S"));
        assert_eq!(um["#series2"]["#extra#"], json!(2.5));
        assert_eq!(um["#series2"]["is_multiple"], json!({}));
    }
}
