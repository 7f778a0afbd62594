//! Reading rows from delimited (CSV/TSV) and JSON-lines files, and converting raw targets.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::{DataError, Example, LoadOptions, Target, TaskKind};

/// One data row before its target is interpreted.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    /// 1-based line of the row in its file (header line counted).
    pub line: u64,
    pub text_a: String,
    pub text_b: Option<String>,
    pub target: String,
}

/// A row result: `Err` holds a [`DataError::BadRow`].
pub(crate) type RowResult = Result<RawRow, DataError>;

/// Which columns to read from a delimited file.
pub(crate) enum Columns<'a> {
    /// The file has no header line; every row has exactly `names.len()` columns.
    Fixed {
        names: &'a [&'a str],
        text_a: usize,
        text_b: Option<usize>,
        target: usize,
    },
    /// The first line is a header; columns are found by name and every row must have as many
    /// columns as the header.
    Named {
        text_a: &'a str,
        text_b: Option<&'a str>,
        target: &'a str,
    },
}

fn open(path: &Path) -> Result<File, DataError> {
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: "data file".into(),
            path: path.to_path_buf(),
            hint: None,
        });
    }
    File::open(path).map_err(|e| DataError::io(path, e))
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        other => DataError::bad_row(path, line, None, format!("{other:?}")),
    }
}

fn decode(path: &Path, line: u64, field: &str, bytes: &[u8]) -> Result<String, DataError> {
    std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
        DataError::bad_row(
            path,
            line,
            Some(field),
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// Read a delimited file. `quoting == false` treats `"` as an ordinary character (GLUE TSVs).
/// The outer error is fatal (I/O, empty file, missing header column); row problems are
/// returned per row.
pub(crate) fn read_delimited(
    path: &Path,
    delimiter: u8,
    quoting: bool,
    columns: &Columns<'_>,
) -> Result<Vec<RowResult>, DataError> {
    let file = open(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(quoting)
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::new(file));
    let mut record = csv::ByteRecord::new();

    // Resolve column indices and names.
    let (names, text_a, text_b, target): (Vec<String>, usize, Option<usize>, usize) = match columns
    {
        Columns::Fixed {
            names,
            text_a,
            text_b,
            target,
        } => (
            names.iter().map(|s| s.to_string()).collect(),
            *text_a,
            *text_b,
            *target,
        ),
        Columns::Named {
            text_a,
            text_b,
            target,
        } => {
            if !reader
                .read_byte_record(&mut record)
                .map_err(|e| csv_error(path, e))?
            {
                return Err(DataError::EmptyFile {
                    path: path.to_path_buf(),
                    what: "no header line".into(),
                });
            }
            let line = record.position().map(|p| p.line()).unwrap_or(1);
            let mut header = Vec::with_capacity(record.len());
            for (i, f) in record.iter().enumerate() {
                let f = if i == 0 {
                    f.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(f)
                } else {
                    f
                };
                header.push(decode(path, line, &format!("#{}", i + 1), f)?);
            }
            let find = |name: &str| {
                header.iter().position(|h| h.trim() == name).ok_or_else(|| {
                    DataError::MissingColumn {
                        path: path.to_path_buf(),
                        line,
                        column: name.to_string(),
                        found: header.clone(),
                    }
                })
            };
            let a = find(text_a)?;
            let b = text_b.map(find).transpose()?;
            let t = find(target)?;
            (header.clone(), a, b, t)
        }
    };

    let mut rows = Vec::new();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        rows.push(row_from_record(
            path, line, &record, &names, text_a, text_b, target,
        ));
    }
    if rows.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
            what: "no data rows".into(),
        });
    }
    Ok(rows)
}

fn row_from_record(
    path: &Path,
    line: u64,
    record: &csv::ByteRecord,
    names: &[String],
    text_a: usize,
    text_b: Option<usize>,
    target: usize,
) -> RowResult {
    let n = record.len();
    if n != names.len() {
        let field = names.get(n).map(String::as_str);
        return Err(DataError::bad_row(
            path,
            line,
            if n < names.len() { field } else { None },
            format!("row has {n} columns, expected {}", names.len()),
        ));
    }
    let get = |i: usize| decode(path, line, &names[i], &record[i]);
    Ok(RawRow {
        line,
        text_a: get(text_a)?,
        text_b: text_b.map(get).transpose()?,
        target: get(target)?,
    })
}

/// Read a JSON-lines file: one JSON object per non-blank line.
pub(crate) fn read_jsonl(
    path: &Path,
    text_a: &str,
    text_b: Option<&str>,
    target: &str,
) -> Result<Vec<RowResult>, DataError> {
    let mut reader = BufReader::new(open(path)?);
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                rows.push(Err(DataError::bad_row(
                    path,
                    line,
                    None,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                )));
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        rows.push(jsonl_row(path, line, text, text_a, text_b, target));
    }
    if rows.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
            what: "no JSON lines".into(),
        });
    }
    Ok(rows)
}

fn jsonl_row(
    path: &Path,
    line: u64,
    text: &str,
    text_a: &str,
    text_b: Option<&str>,
    target: &str,
) -> RowResult {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DataError::bad_row(path, line, None, format!("invalid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| DataError::bad_row(path, line, None, "not a JSON object"))?;
    let field = |name: &str| {
        obj.get(name)
            .ok_or_else(|| DataError::bad_row(path, line, Some(name), "missing"))
    };
    let text_field = |name: &str| match field(name)? {
        serde_json::Value::String(s) => Ok(s.clone()),
        other => Err(DataError::bad_row(
            path,
            line,
            Some(name),
            format!("expected a string, found {other}"),
        )),
    };
    let target_value = match field(target)? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        other => {
            return Err(DataError::bad_row(
                path,
                line,
                Some(target),
                format!("expected a string, number or boolean, found {other}"),
            ))
        }
    };
    Ok(RawRow {
        line,
        text_a: text_field(text_a)?,
        text_b: text_b.map(text_field).transpose()?,
        target: target_value,
    })
}

/// Interpret a raw target value for `kind`. `column` names the target column in errors.
pub(crate) fn convert_target(
    path: &Path,
    line: u64,
    column: &str,
    raw: &str,
    kind: &TaskKind,
) -> Result<Target, DataError> {
    let value = raw.trim();
    match kind {
        TaskKind::Classification { labels } => labels
            .iter()
            .position(|l| l == value)
            .map(Target::Class)
            .ok_or_else(|| {
                DataError::bad_row(
                    path,
                    line,
                    Some(column),
                    format!(
                        "value {value:?} is not in the label set {}",
                        serde_json::to_string(labels).unwrap_or_default()
                    ),
                )
            }),
        TaskKind::Regression => match value.parse::<f32>() {
            Ok(s) if s.is_finite() => Ok(Target::Score(s)),
            _ => Err(DataError::bad_row(
                path,
                line,
                Some(column),
                format!("value {value:?} is not a finite number"),
            )),
        },
    }
}

/// Turn row results into examples, applying the skip policy. Returns the examples and the
/// number of skipped rows. Fails if no example remains.
pub(crate) fn finish_rows(
    path: &Path,
    rows: Vec<RowResult>,
    target_column: &str,
    kind: &TaskKind,
    opts: &LoadOptions,
) -> Result<(Vec<Example>, usize), DataError> {
    let mut examples = Vec::with_capacity(rows.len());
    let mut skipped = 0usize;
    for row in rows {
        let result = row.and_then(|r| {
            let target = convert_target(path, r.line, target_column, &r.target, kind)?;
            Ok(Example {
                text_a: r.text_a,
                text_b: r.text_b,
                target,
            })
        });
        match result {
            Ok(ex) => examples.push(ex),
            Err(e) if opts.skip_bad_rows && e.is_bad_row() => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    if examples.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
            what: format!("no valid data rows ({skipped} malformed rows skipped)"),
        });
    }
    Ok((examples, skipped))
}
