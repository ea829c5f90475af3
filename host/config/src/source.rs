//! Reading configuration files: multi-document YAML, each document checked for `apiVersion`
//! and `kind` first and then read into its typed spec. Every error carries the file, the
//! document, the line and the field.

use super::resources::{Envelope, ObjectMeta, Typed};
use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use lateen_model::ConfigError;

/// Where a document came from, with the line of every key in it.
#[derive(Debug)]
pub struct DocInfo {
    pub file: PathBuf,
    pub index: usize,
    /// 1-based line of the document's first line in the file.
    pub start_line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    lines: HashMap<String, usize>,
}

impl DocInfo {
    /// A resource that did not come from a file (an xDS push): errors name `source`, the
    /// kind and the name, with no line.
    pub fn synthetic(source: &str, kind: &str, name: &str) -> Self {
        DocInfo {
            file: PathBuf::from(source),
            index: 0,
            start_line: 0,
            kind: kind.into(),
            namespace: source.into(),
            name: name.into(),
            lines: HashMap::new(),
        }
    }

    /// An error about `field` of this document. The line is that of the field, or of its
    /// nearest present ancestor.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            doc: self.index,
            line: self.line_of(field),
            resource: Some(format!("{} {}/{}", self.kind, self.namespace, self.name)),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The file line of `field`, falling back to its ancestors, then the document start.
    pub fn line_of(&self, field: &str) -> usize {
        let mut f = field;
        loop {
            if let Some(l) = self.lines.get(f) {
                return self.start_line + l - 1;
            }
            match f.rfind(['.', '[']) {
                Some(i) => f = &f[..i],
                None => return self.start_line,
            }
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One typed resource and where it came from.
#[derive(Debug, Clone)]
pub struct Doc<S> {
    pub info: Arc<DocInfo>,
    pub meta: ObjectMeta,
    pub spec: S,
}

/// One raw document, before typing.
pub struct RawDoc {
    pub info: Arc<DocInfo>,
    pub envelope: Envelope,
    text: String,
}

impl RawDoc {
    /// Reads the whole document as `T` (for kinds without a `spec`, as a ConfigMap).
    pub fn whole<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_saphyr::from_str(&self.text).map_err(|e| {
            saphyr_error(
                &self.info.file,
                self.info.index,
                self.info.start_line,
                &self.info,
                e,
            )
        })
    }

    /// Reads the document's typed form.
    pub fn typed<S: DeserializeOwned>(&self) -> Result<Doc<S>, ConfigError> {
        let t: Typed<S> = serde_saphyr::from_str(&self.text).map_err(|e| {
            saphyr_error(
                &self.info.file,
                self.info.index,
                self.info.start_line,
                &self.info,
                e,
            )
        })?;
        Ok(Doc {
            info: self.info.clone(),
            meta: t.metadata,
            spec: t.spec,
        })
    }
}

fn saphyr_error(
    file: &Path,
    index: usize,
    start_line: usize,
    info: &DocInfo,
    e: serde_saphyr::Error,
) -> ConfigError {
    let line = e
        .location()
        .map_or(start_line, |l| start_line + l.line() as usize - 1);
    // serde-saphyr appends a source snippet after the first line; the location already
    // says where, so keep just the message.
    let full = e.to_string();
    let mut message = full.lines().next().unwrap_or("invalid YAML").trim();
    // Its own "line N column M:" counts within the document; ours (above) within the file.
    message = message
        .strip_prefix("error:")
        .unwrap_or(message)
        .trim_start();
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            message = after;
        }
    }
    let message = message.to_string();
    let field = info
        .lines
        .iter()
        .filter(|(_, l)| start_line + **l - 1 == line)
        .map(|(p, _)| p.clone())
        .max_by_key(String::len)
        .unwrap_or_default();
    ConfigError {
        file: file.to_path_buf(),
        doc: index,
        line,
        resource: (!info.kind.is_empty())
            .then(|| format!("{} {}/{}", info.kind, info.namespace, info.name)),
        field,
        message,
    }
}

/// Lists the YAML files of a config path (a file, or a directory's `*.yaml`/`*.yml`, sorted;
/// Kubernetes ConfigMap volume internals — names starting with `..` — are skipped).
pub fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let io_err = |e: std::io::Error| ConfigError {
        file: path.to_path_buf(),
        doc: 0,
        line: 0,
        resource: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_err)? {
        let p = entry.map_err(io_err)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("..") || name.starts_with('.') {
            continue;
        }
        let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        // `mesh`: MeshConfig, as the istio ConfigMap mounts it.
        if (yaml || name == "mesh") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// A lone CR is a line break to the YAML parser (and to editors) but not to `str::lines`;
/// making every break a LF keeps the line numbers of errors and fields in agreement. A
/// leading byte-order mark (which some editors write) is dropped: it is no content.
fn unix_breaks(text: &str) -> std::borrow::Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Splits a file into its documents and reads each one's envelope.
pub fn read_documents(file: &Path, text: &str) -> (Vec<RawDoc>, Vec<ConfigError>) {
    let text = &*unix_breaks(text);
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    let mut index = 0;
    for (start_line, body) in split_documents(text) {
        // Byte-order marks count as nothing, as they do to the parser.
        fn blank(l: &str) -> &str {
            l.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        }
        if body
            .lines()
            .all(|l| blank(l).is_empty() || blank(l).starts_with('#'))
        {
            continue;
        }
        index += 1;
        let lines = line_map(&body);
        let bare = DocInfo {
            file: file.to_path_buf(),
            index,
            start_line,
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            lines,
        };
        let envelope: Envelope = match serde_saphyr::from_str(&body) {
            Ok(e) => e,
            Err(e) => {
                let mut err = saphyr_error(file, index, start_line, &bare, e);
                // The parser places "unexpected end of input" after the last line.
                err.line = err.line.min(text.lines().count().max(1));
                errors.push(err);
                continue;
            }
        };
        let info = DocInfo {
            kind: envelope.kind.clone(),
            namespace: envelope
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: envelope.metadata.name.clone(),
            ..bare
        };
        docs.push(RawDoc {
            info: Arc::new(info),
            envelope,
            text: body,
        });
    }
    (docs, errors)
}

// Documents start at a `---` line; returns (first line number, text) for each. The text
// keeps blank lines in place of the separator so parser lines map back simply.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_sep = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line == "..."
            || line.starts_with("--- #");
        if is_sep {
            if !cur.is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// Maps every key path of a YAML document (`spec.http[0].route`) to its 1-based line.
fn line_map(text: &str) -> HashMap<String, usize> {
    enum Frame {
        Map { key: Option<String> },
        Seq { idx: usize },
    }
    fn join(path: &[String]) -> String {
        let mut s = String::new();
        for seg in path {
            if !s.is_empty() && !seg.starts_with('[') {
                s.push('.');
            }
            s.push_str(seg);
        }
        s
    }
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { break };
        let line = span.start.line();
        match ev {
            Event::Scalar(v, ..) => match stack.last_mut() {
                Some(Frame::Map { key }) => {
                    if key.is_none() {
                        path.push(v.to_string());
                        out.insert(join(&path), line);
                        path.pop();
                        *key = Some(v.to_string());
                    } else {
                        *key = None;
                    }
                }
                Some(Frame::Seq { idx }) => {
                    path.push(format!("[{idx}]"));
                    out.insert(join(&path), line);
                    path.pop();
                    *idx += 1;
                }
                None => {}
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                match stack.last_mut() {
                    Some(Frame::Map { key: Some(k) }) => path.push(k.clone()),
                    Some(Frame::Seq { idx }) => {
                        path.push(format!("[{idx}]"));
                        out.entry(join(&path)).or_insert(line);
                    }
                    _ => {}
                }
                stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { key: None }
                } else {
                    Frame::Seq { idx: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                match stack.last_mut() {
                    Some(Frame::Map { key }) => {
                        *key = None;
                        path.pop();
                    }
                    Some(Frame::Seq { idx }) => {
                        *idx += 1;
                        path.pop();
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_map_paths() {
        let m = line_map(
            "a: 1\nspec:\n  http:\n  - name: x\n    route:\n    - destination:\n        host: h\n",
        );
        assert_eq!(m["a"], 1);
        assert_eq!(m["spec.http"], 3);
        assert_eq!(m["spec.http[0]"], 4);
        assert_eq!(m["spec.http[0].name"], 4);
        assert_eq!(m["spec.http[0].route[0].destination.host"], 7);
    }

    #[test]
    fn documents_and_errors_are_located() {
        let text = "---\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n# c\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: [1, 2]\n";
        let (docs, errs) = read_documents(Path::new("f.yaml"), text);
        assert_eq!(docs.len(), 1);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].doc, 2);
        assert_eq!(errs[0].line, 11, "{}", errs[0]);
        assert_eq!(docs[0].info.line_of("metadata.name"), 4);
    }

    #[test]
    fn a_byte_order_mark_is_not_a_document() {
        // Found by the config_yaml fuzz target: a lone BOM made a document whose error
        // pointed at line 2 of a one-line file.
        for text in ["\u{feff}", "\u{feff}\u{feff}", "\n\u{feff}\n"] {
            let (docs, errs) = read_documents(Path::new("f.yaml"), text);
            assert!(docs.is_empty() && errs.is_empty(), "{text:?}: {errs:?}");
        }
        // An error at the end of input points at the last line, not past it.
        let (_, errs) = read_documents(Path::new("f.yaml"), "a: [");
        assert_eq!(errs[0].line, 1, "{}", errs[0]);
        let (docs, errs) = read_documents(
            Path::new("f.yaml"),
            "\u{feff}apiVersion: v1\nkind: A\nmetadata: {name: a}\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(docs[0].info.line_of("metadata.name"), 3);
    }

    #[test]
    fn lone_carriage_returns_break_lines_as_in_yaml() {
        // Found by the config_yaml fuzz target: the parser counted a lone CR as a line
        // break and the loader did not, so errors pointed past the end of the file and a
        // `---` after a CR did not start a document.
        for nl in ["\r", "\r\n", "\n"] {
            let text = [
                "apiVersion: v1",
                "kind: A",
                "metadata: {name: a}",
                "---",
                "apiVersion: v1",
                "kind: B",
                "metadata:",
                "  name: [1, 2]",
                "",
            ]
            .join(nl);
            let (docs, errs) = read_documents(Path::new("f.yaml"), &text);
            assert_eq!((docs.len(), errs.len()), (1, 1), "breaks {nl:?}: {errs:?}");
            assert_eq!(
                (errs[0].doc, errs[0].line),
                (2, 8),
                "breaks {nl:?}: {}",
                errs[0]
            );
            assert_eq!(docs[0].info.line_of("metadata.name"), 3);
        }
    }
}
