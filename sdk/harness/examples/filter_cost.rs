//! Per-request cost of filters, in-process on Lateen's runtime: each `.wasm` (a proxy-wasm
//! module or a component) serves the same requests, interleaved in rounds, and the median
//! round is reported. A benchmark, not a test: it prints figures.
//!
//! ```sh
//! cargo run --release -p lateen-harness --example filter_cost -- \
//!     [--requests N] [--rounds R] LABEL=PATH.wasm[=CONFIG_JSON] ...
//! ```
//!
//! Each request runs request headers (with a mobile `user-agent`), response headers and the
//! end of the stream (on_done/on_log/on_delete, or on-done), as the proxy does.

use lateen_harness::{Plugin, Request, Response};
use std::time::{Duration, Instant};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

struct Subject {
    label: String,
    plugin: Plugin,
    /// Per round: wall time per request, guest time per request.
    rounds: Vec<(Duration, Duration)>,
}

fn one_request(p: &Plugin) {
    let mut s = p.stream();
    s.send_request(
        Request::get("/reviews/1")
            .authority("reviews")
            .header("user-agent", IPHONE),
    )
    .expect("request");
    s.send_response(Response::new(200).header("content-type", "text/plain"))
        .expect("response");
    s.finish().expect("finish");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut requests = 20_000u32;
    let mut rounds = 5usize;
    let mut subjects = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => requests = args.next().ok_or("--requests N")?.parse()?,
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            spec => {
                let mut parts = spec.splitn(3, '=');
                let label = parts.next().unwrap_or_default().to_string();
                let path = parts.next().ok_or("expected LABEL=PATH.wasm[=CONFIG]")?;
                let config = parts.next().unwrap_or("{}");
                let plugin = Plugin::load(path)
                    .name(&format!("bench/{label}"))
                    .config(config.to_string())
                    .log_level(lateen_harness::LogLevel::Warn)
                    .start()?;
                subjects.push(Subject {
                    label,
                    plugin,
                    rounds: Vec::new(),
                });
            }
        }
    }
    if subjects.is_empty() {
        return Err("give at least one LABEL=PATH.wasm".into());
    }
    for s in &subjects {
        for _ in 0..2_000 {
            one_request(&s.plugin);
        }
    }
    for _ in 0..rounds {
        for s in &mut subjects {
            let (_, guest0) = s.plugin.callback_time();
            let t = Instant::now();
            for _ in 0..requests {
                one_request(&s.plugin);
            }
            let wall = t.elapsed() / requests;
            let (_, guest1) = s.plugin.callback_time();
            s.rounds.push((wall, (guest1 - guest0) / requests));
        }
    }
    println!("{requests} requests x {rounds} rounds (median round), in-process on the harness");
    println!(
        "{:<28} {:>14} {:>16} {:>10}",
        "filter", "µs/request", "guest µs/req", "vs first"
    );
    let first = median(subjects[0].rounds.iter().map(|r| r.1).collect());
    for s in &subjects {
        let wall = median(s.rounds.iter().map(|r| r.0).collect());
        let guest = median(s.rounds.iter().map(|r| r.1).collect());
        println!(
            "{:<28} {:>14.2} {:>16.2} {:>9.2}x",
            s.label,
            wall.as_nanos() as f64 / 1000.0,
            guest.as_nanos() as f64 / 1000.0,
            guest.as_secs_f64() / first.as_secs_f64()
        );
    }
    Ok(())
}
