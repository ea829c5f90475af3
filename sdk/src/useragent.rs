//! User-agent classification into the families routing rules care about.
//!
//! Built on the `woothee` parser (pure Rust, builds for wasm32) with fix-ups for browsers it
//! predates (Chromium Edge's `Edg/`, Chrome and Firefox on iOS).
//!
//! ```rust
//! use lateen_sdk::useragent::classify;
//! let edge = classify(
//!     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
//!      Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0");
//! assert_eq!((edge.browser, edge.os, edge.device), ("Edge", "Windows", "desktop"));
//! assert_eq!(classify("curl/8.5.0").browser, "other");
//! ```

/// What a `user-agent` header says about the client, with canonical family names.
///
/// ```rust
/// let ua = lateen_sdk::useragent::classify(
///     "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
/// assert_eq!(ua.device, "bot");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAgent {
    /// `Chrome`, `Firefox`, `Safari`, `Edge`, `Opera`, `Internet Explorer` or `other`.
    pub browser: &'static str,
    /// `iOS`, `Android`, `Windows`, `macOS`, `Linux`, `ChromeOS` or `other`.
    pub os: &'static str,
    /// `mobile`, `desktop`, `bot` or `other`.
    pub device: &'static str,
}

/// Classifies a user-agent string. Anything it does not recognise is `other`.
///
/// ```
/// let ua = lateen_sdk::useragent::classify(
///     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
///      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1");
/// assert_eq!((ua.browser, ua.os, ua.device), ("Safari", "iOS", "mobile"));
/// ```
pub fn classify(ua: &str) -> UserAgent {
    let parsed = woothee::parser::Parser::new().parse(ua);
    let (name, os, category) = match &parsed {
        Some(r) => (r.name, r.os, r.category),
        None => ("", "", ""),
    };
    let browser = if ua.contains("Edg/") || ua.contains("Edge/") || ua.contains("EdgA/") {
        "Edge"
    } else if ua.contains("OPR/") || name == "Opera" {
        "Opera"
    } else if ua.contains("CriOS/") || name == "Chrome" {
        "Chrome"
    } else if ua.contains("FxiOS/") || name == "Firefox" {
        "Firefox"
    } else if name == "Safari" {
        "Safari"
    } else if name == "Internet Explorer" {
        "Internet Explorer"
    } else {
        "other"
    };
    let os = match os {
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "Android" => "Android",
        "Mac OSX" | "Mac OS" => "macOS",
        "Linux" => "Linux",
        "ChromeOS" => "ChromeOS",
        o if o.starts_with("Windows") => "Windows",
        _ if ua.contains("Android") => "Android",
        _ => "other",
    };
    let device = match category {
        "smartphone" | "mobilephone" => "mobile",
        "pc" => "desktop",
        "crawler" => "bot",
        _ if os == "iOS" || os == "Android" => "mobile",
        _ => "other",
    };
    UserAgent {
        browser,
        os,
        device,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let cases = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", ("Chrome", "Windows", "desktop")),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0", ("Edge", "Windows", "desktop")),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", ("Safari", "macOS", "desktop")),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", ("Firefox", "Linux", "desktop")),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36", ("Chrome", "Android", "mobile")),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", ("Chrome", "iOS", "mobile")),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ("other", "other", "bot")),
            ("curl/8.5.0", ("other", "other", "other")),
        ];
        for (ua, want) in cases {
            let got = classify(ua);
            assert_eq!((got.browser, got.os, got.device), want, "{ua}");
        }
    }
}
