//! The YAML loader: any text either types into resources or yields errors that name their
//! place, and never panics. Errors must point inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Lines as YAML counts them: LF, CRLF and a lone CR each end one.
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1;
    if let Err(errors) = lateen_config::compile::parse(Path::new("fuzz.yaml"), text) {
        assert!(!errors.is_empty());
        for e in errors {
            // Every error renders, and a line it names exists.
            let _ = e.to_string();
            assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
        }
    }
});
