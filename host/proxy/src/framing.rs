//! A watch on HTTP/1.1 request framing, for what hyper does not tell: a header block that
//! carries both `Content-Length` and `Transfer-Encoding` (the request-smuggling shape). hyper
//! lets the chunked framing win and drops the length before the request reaches the proxy,
//! where Envoy refuses such a request with 400 unless `allow_chunked_length` is set. So the
//! connection's bytes are watched on their way into hyper: after each line feed, the next
//! line's name is compared with the two field names (a line feed followed by an empty line
//! ends a block). Most bytes are skipped with `memchr` to the next line feed, so the watch
//! costs little even on large bodies.
//!
//! The watch cannot tell a header block from body bytes that look like one, so it only
//! flags; the request path refuses a request only when hyper also parsed it as chunked.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const CL: &[u8] = b"content-length:";
const TE: &[u8] = b"transfer-encoding:";

/// Set by the watch when a block with both fields went by; taken by the request path.
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// Whether a block with both fields was seen since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Where the scanner is between two reads.
#[derive(Debug, Default)]
struct Scanner {
    /// Bytes of the current line matched so far, when it is still at a line's start
    /// (`None`: in the middle of a line, skipping to the next line feed).
    at: Option<u8>,
    /// Which names the current line still matches (bit 0: Content-Length, bit 1:
    /// Transfer-Encoding, bit 2: the empty line that ends the block).
    cand: u8,
    /// The fields seen in the current block (bit 0, bit 1; 4 once reported).
    seen: u8,
    /// Reading the digits of a Content-Length value.
    in_length: bool,
    /// The block's Content-Length, once read.
    length: Option<u64>,
    /// Body bytes still to pass over: after a block framed by its length alone, the body
    /// is skipped whole, so that what it holds is never read as a header.
    skip: u64,
}

impl Scanner {
    fn new_line(&mut self) {
        self.at = Some(0);
        self.cand = 0b111;
    }

    /// A blank line: the block ends, and its body (when its length is known) is skipped.
    fn end_block(&mut self) {
        if self.seen == 1 {
            self.skip = self.length.unwrap_or(0);
        }
        self.seen = 0;
        self.length = None;
        if self.skip > 0 {
            self.at = None;
        } else {
            self.new_line();
        }
    }

    /// Scans `buf`; true when a block holding both fields was completed in it.
    fn scan(&mut self, mut buf: &[u8]) -> bool {
        let mut both = false;
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                buf = &buf[n..];
                // The next request's line follows: no header there.
                self.at = None;
                continue;
            }
            if self.in_length {
                match buf[0] {
                    b' ' | b'\t' if self.length.is_none() => {}
                    d @ b'0'..=b'9' => {
                        let v = self.length.unwrap_or(0);
                        self.length =
                            Some(v.saturating_mul(10).saturating_add(u64::from(d - b'0')));
                    }
                    b => {
                        self.in_length = false;
                        self.at = None;
                        if b == b'\n' {
                            self.new_line();
                        }
                    }
                }
                buf = &buf[1..];
                continue;
            }
            let Some(at) = self.at else {
                match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        self.new_line();
                        buf = &buf[i + 1..];
                        continue;
                    }
                    None => return both,
                }
            };
            let b = buf[0].to_ascii_lowercase();
            buf = &buf[1..];
            let i = usize::from(at);
            if self.cand & 1 != 0 && CL.get(i) != Some(&b) {
                self.cand &= !1;
            }
            if self.cand & 2 != 0 && TE.get(i) != Some(&b) {
                self.cand &= !2;
            }
            if self.cand & 4 != 0 {
                // An empty line: "\r\n", or a bare "\n" (which hyper accepts too).
                match (i, b) {
                    (0, b'\r') => {}
                    (0, b'\n') | (1, b'\n') => {
                        self.end_block();
                        continue;
                    }
                    _ => self.cand &= !4,
                }
            }
            if self.cand & 1 != 0 && i + 1 == CL.len() {
                self.seen |= 1;
                self.cand = 0;
                self.in_length = true;
                self.length = None;
                continue;
            }
            if self.cand & 2 != 0 && i + 1 == TE.len() {
                self.seen |= 2;
                self.cand = 0;
            }
            if self.seen == 3 {
                both = true;
                // Reported once per block.
                self.seen = 4;
            }
            if self.cand == 0 {
                self.at = None;
                if b == b'\n' {
                    self.new_line();
                }
            } else {
                self.at = Some(at + 1);
            }
        }
        both
    }
}

/// An HTTP/1.1 connection's transport, watched on the way in.
pub struct Watched<I> {
    io: I,
    scan: Scanner,
    flag: Arc<Flag>,
}

impl<I> Watched<I> {
    pub fn new(io: I, flag: Arc<Flag>) -> Self {
        Watched {
            io,
            // The request line comes first: it is no header, so not at a line's start.
            scan: Scanner::default(),
            flag,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.scan.scan(&buf.filled()[before..]) {
            this.flag.0.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Scanner;

    fn both(chunks: &[&[u8]]) -> usize {
        let mut s = Scanner::default();
        chunks.iter().filter(|c| s.scan(c)).count()
    }

    #[test]
    fn a_block_with_both_fields_is_seen_in_any_order_and_case() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(both(&[cl_te]), 1);
        let te_cl = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n";
        assert_eq!(both(&[te_cl]), 1);
        // Split anywhere, even inside a name.
        for at in 1..cl_te.len() {
            assert_eq!(both(&[&cl_te[..at], &cl_te[at..]]), 1, "split at {at}");
        }
        // Bare line feeds.
        assert_eq!(
            both(&[b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n"]),
            1
        );
    }

    #[test]
    fn one_field_per_block_or_lookalikes_are_not() {
        // Each request carries one of the two: the blank line between them resets.
        let two = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(both(&[two]), 0);
        // Names inside other names or values.
        let like = b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nContent-Transfer-Encoding: x\r\nA: content-length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(both(&[like]), 0);
        assert_eq!(
            both(&[b"GET / HTTP/1.1\r\nContent-Length 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            0
        );
    }

    #[test]
    fn a_body_framed_by_its_length_is_skipped_whole() {
        let body = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}POST / HTTP/1.1\r\nContent-Length:4\r\nTransfer-Encoding: chunked\r\n\r\n",
            body.len()
        );
        let b = req.as_bytes();
        // The lookalike in the body is not seen; the next request's two fields are.
        assert_eq!(both(&[b]), 1);
        for at in 1..b.len() {
            assert_eq!(both(&[&b[..at], &b[at..]]), 1, "split at {at}");
        }
        let only_body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(both(&[only_body.as_bytes()]), 0);
    }
}
