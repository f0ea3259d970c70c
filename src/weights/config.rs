//! `config.json` beside the weights (or any JSON object file), read with errors
//! that name the file and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// A JSON file; its errors name the file.
pub(super) fn read_json(path: &Path) -> Result<Value> {
    super::regular_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::model(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("invalid JSON: {e}")))
}

/// A `config.json` (or any JSON object file) with field access whose errors
/// name the file and the field. Typed configs use [`Config::parse`] with
/// `#[serde(default = ...)]` on each field, documenting the default there.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub fields: serde_json::Map<String, Value>,
}

impl Config {
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        match read_json(&path)? {
            Value::Object(fields) => Ok(Self { path, fields }),
            _ => Err(Error::model(&path, "expected a JSON object")),
        }
    }

    /// A required field.
    pub fn get<T: DeserializeOwned>(&self, field: &str) -> Result<T> {
        match self.fields.get(field) {
            Some(value) => self.convert(field, value),
            None => Err(Error::model(&self.path, format!("missing field `{field}`"))),
        }
    }

    /// An optional field: `default` when absent or null, an error when present
    /// with the wrong type.
    pub fn get_or<T: DeserializeOwned>(&self, field: &str, default: T) -> Result<T> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => self.convert(field, value),
        }
    }

    /// The whole file as a typed struct (serde defaults apply to absent fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(Value::Object(self.fields.clone()))
            .map_err(|e| Error::model(&self.path, e.to_string()))
    }

    fn convert<T: DeserializeOwned>(&self, field: &str, value: &Value) -> Result<T> {
        T::deserialize(value).map_err(|e| Error::model(&self.path, format!("field `{field}`: {e}")))
    }
}
