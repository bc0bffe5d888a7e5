//! Loading Vigil's configuration files.
//!
//! What it is: read a TOML file, deserialize it (the types reject unknown
//! fields), then run the type's own validation, so every error names the file
//! and, where it can, the field.
//!
//! What it is not: the configuration types themselves; each component owns
//! its own beside its code.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration type that checks its values after parsing.
pub trait Validate {
    /// `Err((field, message))` names the first invalid field.
    fn validate(&self) -> Result<(), (&'static str, String)>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// Reads, parses and validates `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text`; `path` names it in errors.
pub fn parse<T: DeserializeOwned + Validate>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let cfg: T = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    cfg.validate()
        .map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct C {
        n: u32,
    }

    impl Validate for C {
        fn validate(&self) -> Result<(), (&'static str, String)> {
            if self.n == 0 {
                Err(("n", "must be positive".into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let p = Path::new("c.toml");
        assert_eq!(parse::<C>(p, "n = 3").unwrap().n, 3);
        assert_eq!(
            parse::<C>(p, "n = 0").unwrap_err().to_string(),
            "c.toml: field `n`: must be positive"
        );
        assert!(
            parse::<C>(p, "n = 1\nx = 2")
                .unwrap_err()
                .to_string()
                .contains("unknown field `x`")
        );
        assert!(matches!(
            load::<C>(Path::new("/nonexistent/c.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
