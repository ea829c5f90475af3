//! Configuration errors, located as precisely as the input allows: the snapshot keeps the
//! ones that did not stop it (a refused `matchRules` entry keeps its last good config).

use std::fmt;
use std::path::PathBuf;

/// A configuration problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based index of the document in its file (0: the file as a whole).
    pub doc: usize,
    /// 1-based line in the file (0: unknown).
    pub line: usize,
    /// `Kind namespace/name` of the resource, when known.
    pub resource: Option<String>,
    /// Field path (`spec.http[0].route[1].destination.subset`).
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.doc > 0 {
            write!(f, ": document {}", self.doc)?;
        }
        if let Some(r) = &self.resource {
            write!(f, " ({r})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
