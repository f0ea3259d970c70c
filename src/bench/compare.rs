//! `easel bench ... --vs OTHER.json`: easel's figures beside another engine's
//! (`tools/bench_torch.py --json`), row by row where both measured the same
//! thing, as `tools/compare.py` prints them. Ratios are of medians;
//! `easel/other` > 1 means easel is slower.

use std::path::Path;

use serde_json::Value;

use crate::bench::Table;
use crate::error::{Error, Result};

/// A report section, where its rows are, and the fields that name a row.
const SECTIONS: [(&str, &str, &[&str]); 3] = [
    ("models", "", &["model", "batch"]),
    ("kernels", "", &["kernel", "variant", "shape"]),
    ("generate", "rows", &["width", "height", "candidates"]),
];

/// Read another engine's report: one JSON document, or (as older
/// `tools/bench_torch.py` runs printed) text whose JSON lines are `models` rows.
pub fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::BadInput(format!("--vs {}: {e}", path.display())))?;
    if let Ok(doc @ Value::Object(_)) = serde_json::from_str::<Value>(&text) {
        return Ok(doc);
    }
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|r| r.get("model").is_some() && r.get("batch").is_some())
        .collect();
    if rows.is_empty() {
        return Err(Error::BadInput(format!(
            "--vs {}: neither a JSON report nor lines of model rows",
            path.display()
        )));
    }
    let first = &rows[0];
    Ok(serde_json::json!({
        "engine": first.get("engine").cloned().unwrap_or("other".into()),
        "device": first.get("device").cloned().unwrap_or(Value::Null),
        "models": rows,
    }))
}

fn rows<'a>(doc: &'a Value, section: &str, inner: &str) -> &'a [Value] {
    let s = &doc[section];
    let list = if inner.is_empty() { s } else { &s[inner] };
    list.as_array().map_or(&[], Vec::as_slice)
}

fn key(row: &Value, fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| match &row[*f] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Print the rows both reports hold, side by side; errors if there are none.
pub fn print(ours: &Value, theirs: &Value) -> Result<()> {
    let other = theirs["engine"].as_str().unwrap_or("other");
    let mut lines = Vec::new();
    for (section, inner, fields) in SECTIONS {
        for a in rows(ours, section, inner) {
            let k = key(a, fields);
            let Some(b) = rows(theirs, section, inner)
                .iter()
                .find(|b| key(b, fields) == k)
            else {
                continue;
            };
            let (Some(ma), Some(mb)) = (a["median_ms"].as_f64(), b["median_ms"].as_f64()) else {
                continue;
            };
            lines.push(vec![
                section.to_string(),
                k,
                format!("{ma:.2}"),
                format!("{mb:.2}"),
                format!("{:.2}", ma / mb),
                format!("{:.2}", mb / ma),
            ]);
        }
    }
    if lines.is_empty() {
        return Err(Error::BadInput(format!(
            "--vs: no rows in common with the {other} report (it has: {})",
            SECTIONS
                .iter()
                .filter(|(s, _, _)| theirs.get(*s).is_some())
                .map(|(s, _, _)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    println!(
        "\neasel vs {other} ({}), medians:",
        theirs["device"].as_str().unwrap_or("device not given")
    );
    let table = Table::new(
        &[
            ("section", 9),
            ("row", 44),
            ("easel ms", 10),
            (&format!("{other} ms"), 10),
            (&format!("easel/{other}"), 12),
            (&format!("{other}/easel"), 12),
        ],
        2,
    );
    lines.iter().for_each(|l| table.row(l));
    Ok(())
}
