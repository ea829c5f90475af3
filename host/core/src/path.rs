//! Request path normalization before any filter or route sees the path: Istio's mesh-wide
//! `pathNormalization` (BASE by default), which it renders as Envoy's `normalize_path`,
//! `merge_slashes` and `path_with_escaped_slashes_action`. Without it, a filter matching
//! `/admin` (an AuthorizationPolicy, a route) would miss `/public/../admin`, which the
//! upstream reads as `/admin`.

use std::borrow::Cow;

/// How request paths are normalized (Istio's `ProxyPathNormalization.NormalizationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    /// Paths pass as they came.
    None,
    /// RFC 3986: percent-encoded unreserved characters decoded, the other escapes'
    /// hex digits upper-cased, and `.` and `..` segments resolved.
    #[default]
    Base,
    /// BASE, then runs of slashes merged into one.
    MergeSlashes,
    /// `%2F` and `%5C` decoded too (to `/` and `\`), then as MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// Istio's name for it (`BASE`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NONE" => Self::None,
            "DEFAULT" | "BASE" => Self::Base,
            "MERGE_SLASHES" => Self::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => Self::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

/// A path that cannot be normalized: Envoy answers it with 400.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// `path_and_query` with its path normalized; the query is kept as it is. Paths that are
/// not origin-form (`*`, an authority for CONNECT) pass unchanged.
pub fn normalize(path_and_query: &str, mode: PathNormalization) -> Result<Cow<'_, str>, Malformed> {
    if mode == PathNormalization::None || !path_and_query.starts_with('/') {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    // The common case: nothing to do, nothing allocated.
    if !needs_work(path, mode) {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let decoded = decode(path.as_bytes(), mode)?;
    let mut out = remove_dot_segments(&decoded);
    if mode != PathNormalization::Base {
        merge_slashes(&mut out);
    }
    out.push_str(query);
    Ok(Cow::Owned(out))
}

fn needs_work(path: &str, mode: PathNormalization) -> bool {
    path.contains('%')
        || path.split('/').any(|s| s == "." || s == "..")
        || (mode != PathNormalization::Base && path.contains("//"))
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

// Percent-decoding of unreserved characters (and of `%2F`/`%5C` when asked); other escapes
// stay, upper-cased, so that one resource has one spelling.
fn decode(path: &[u8], mode: PathNormalization) -> Result<String, Malformed> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(Malformed);
        };
        let v = h << 4 | l;
        let slash = matches!(v, b'/' | b'\\');
        if unreserved(v) || (slash && mode == PathNormalization::DecodeAndMergeSlashes) {
            out.push(v);
        } else {
            out.push(b'%');
            out.extend(format!("{v:02X}").bytes());
        }
        i += 3;
    }
    // Only ASCII was decoded, so bytes that were UTF-8 stay UTF-8.
    String::from_utf8(out).map_err(|_| Malformed)
}

// RFC 3986 section 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    s.push('/');
    s.push_str(&out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}

fn merge_slashes(path: &mut String) {
    let mut prev = '\0';
    path.retain(|c| {
        let keep = !(c == '/' && prev == '/');
        prev = c;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::*;
    use super::*;

    fn n(p: &str, m: PathNormalization) -> String {
        normalize(p, m).expect("normalizes").into_owned()
    }

    #[test]
    fn base_resolves_dot_segments_and_decodes_unreserved_escapes() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b?x=/../y", "/a/b?x=/../y"),
            ("/public/../admin", "/admin"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%61dmin", "/admin"),
            ("/%2e%2E/admin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a//b", "/a//b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ] {
            assert_eq!(n(input, Base), want, "{input}");
        }
        assert!(matches!(
            normalize("/plain/path?q", Base),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(normalize("/a%zz", Base), Err(Malformed));
        assert_eq!(normalize("/a%2", Base), Err(Malformed));
        assert_eq!(n("*", Base), "*");
        assert_eq!(n("/public/../admin", None), "/public/../admin");
    }

    #[test]
    fn merge_and_decode_slashes() {
        assert_eq!(n("//a///b/../c", MergeSlashes), "/a/c");
        assert_eq!(n("/a%2fb", MergeSlashes), "/a%2Fb");
        assert_eq!(n("/a%2F%2fb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(n("/x/..%2Fadmin", DecodeAndMergeSlashes), "/admin");
        assert_eq!(n("/a%5Cb", DecodeAndMergeSlashes), "/a\\b");
        assert_eq!(
            PathNormalization::parse("MERGE_SLASHES"),
            Some(MergeSlashes)
        );
        assert_eq!(PathNormalization::parse("base"), Option::None);
    }
}
