//! The soak and overload run (benches/soak/run.sh starts the server and calls this):
//!
//! 1. capacity: closed loop, `--concurrency` workers sending the request back to back for
//!    `--capacity-secs`: the request rate the server sustains, C;
//! 2. soak: open loop at `--soak-load` × C (default 0.8) for `--soak-secs`: every answer must
//!    be a 200, and the server's resident memory at the end within 10% of where it was after
//!    the first tenth of the run (warm);
//! 3. overload: open loop at `--overload-load` × C (default 2) for `--overload-secs`: the
//!    excess must be refused (429, `Retry-After`) promptly — no timeouts, no 5xx, no dropped
//!    connections, memory bounded.
//!
//! Open loop: requests are sent on a schedule, whether or not earlier ones have been
//! answered, as independent clients do (a closed loop would slow down with the server and
//! hide its queueing). Prints a markdown report; exits non-zero when a property fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The infer URL.
    #[arg(long)]
    url: String,
    /// The request body (V2 JSON).
    #[arg(long)]
    body: std::path::PathBuf,
    /// The server's process id (its resident memory is sampled from /proc).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    capacity_secs: f64,
    #[arg(long, default_value_t = 0.8)]
    soak_load: f64,
    #[arg(long, default_value_t = 120.0)]
    soak_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    overload_load: f64,
    #[arg(long, default_value_t = 30.0)]
    overload_secs: f64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What a phase saw.
#[derive(Default)]
struct Tally {
    /// Status code (0: no answer — a connection error or the 5 s timeout) → count.
    codes: BTreeMap<u16, u64>,
    /// Latencies in µs by outcome (200, refused) for percentiles.
    ok_us: Vec<u64>,
    refused_us: Vec<u64>,
    sent: u64,
    wall: f64,
    rss_start: u64,
    rss_end: u64,
    rss_max: u64,
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

async fn one(c: &reqwest::Client, url: &str, body: &bytes::Bytes) -> (u16, u64) {
    let t = Instant::now();
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await;
    let code = match r {
        Ok(r) => {
            let code = r.status().as_u16();
            let _ = r.bytes().await;
            code
        }
        Err(_) => 0,
    };
    (code, t.elapsed().as_micros() as u64)
}

async fn capacity(a: &Args, c: &reqwest::Client, body: &bytes::Bytes) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(a.capacity_secs);
    let t = Instant::now();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (c, url, body, done) = (c.clone(), a.url.clone(), body.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                while Instant::now() < until {
                    if one(&c, &url, &body).await.0 == 200 {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

/// Sends at `rate` per second for `secs`, on a 1 ms schedule.
async fn open_loop(
    a: &Args,
    c: &reqwest::Client,
    body: &bytes::Bytes,
    rate: f64,
    secs: f64,
) -> Tally {
    let results = Arc::new(std::sync::Mutex::new(Tally::default()));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let inflight = Arc::new(AtomicU64::new(0));
    let warm = Duration::from_secs_f64(secs / 10.0);
    let mut rss_start = None;
    let mut rss_max = 0;
    let mut last_rss = Instant::now();
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed.as_secs_f64() >= secs {
            break;
        }
        if rss_start.is_none() && elapsed >= warm {
            rss_start = Some(rss_kib(a.pid));
        }
        if last_rss.elapsed() >= Duration::from_millis(500) {
            rss_max = rss_max.max(rss_kib(a.pid));
            last_rss = Instant::now();
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            let (c, url, body, results) =
                (c.clone(), a.url.clone(), body.clone(), Arc::clone(&results));
            let inflight = Arc::clone(&inflight);
            inflight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let (code, us) = one(&c, &url, &body).await;
                let mut r = results.lock().unwrap();
                *r.codes.entry(code).or_default() += 1;
                match code {
                    200 => r.ok_us.push(us),
                    429 => r.refused_us.push(us),
                    _ => {}
                }
                inflight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    // Every request has its answer or its 5 s timeout.
    while inflight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut r = std::mem::take(&mut *results.lock().unwrap());
    r.sent = sent;
    r.wall = wall;
    r.rss_start = rss_start.unwrap_or_else(|| rss_kib(a.pid));
    r.rss_end = rss_kib(a.pid);
    r.rss_max = rss_max.max(r.rss_end);
    r
}

fn row(name: &str, rate: f64, t: &mut Tally) -> String {
    let ok = t.codes.get(&200).copied().unwrap_or(0);
    let refused = t.codes.get(&429).copied().unwrap_or(0);
    let other: u64 = t
        .codes
        .iter()
        .filter(|(c, _)| **c != 200 && **c != 429)
        .map(|(_, n)| n)
        .sum();
    format!(
        "| {name} | {rate:.0} | {:.0} | {ok} | {refused} | {other} | {:.2} / {:.2} | {:.2} | {} → {} (max {}) MiB |",
        t.sent as f64 / t.wall,
        pct(&mut t.ok_us, 0.5),
        pct(&mut t.ok_us, 0.99),
        pct(&mut t.refused_us, 0.99),
        t.rss_start / 1024,
        t.rss_end / 1024,
        t.rss_max / 1024,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let body = bytes::Bytes::from(std::fs::read(&a.body)?);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1024)
        .build()?;
    let cap = capacity(&a, &c, &body).await;
    eprintln!("capacity: {cap:.0} req/s");
    let soak_rate = cap * a.soak_load;
    let mut soak = open_loop(&a, &c, &body, soak_rate, a.soak_secs).await;
    eprintln!("soak done: {:?}", soak.codes);
    let over_rate = cap * a.overload_load;
    let mut over = open_loop(&a, &c, &body, over_rate, a.overload_secs).await;
    eprintln!("overload done: {:?}", over.codes);

    println!(
        "Capacity (closed loop, {} workers, {:.0} s): **{cap:.0} req/s**.",
        a.concurrency, a.capacity_secs
    );
    println!();
    println!(
        "| phase | target req/s | sent req/s | 200 | 429 | other (5xx, no answer) | 200 p50 / p99 ms | 429 p99 ms | server RSS (warm → end) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "{}",
        row(
            &format!("soak, {:.0}% for {:.0} s", a.soak_load * 100.0, a.soak_secs),
            soak_rate,
            &mut soak
        )
    );
    println!(
        "{}",
        row(
            &format!(
                "overload, {:.0}% for {:.0} s",
                a.overload_load * 100.0,
                a.overload_secs
            ),
            over_rate,
            &mut over
        )
    );
    println!();
    let unexpected_soak: u64 = soak
        .codes
        .iter()
        .filter(|(c, _)| **c != 200)
        .map(|(_, n)| n)
        .sum();
    let unexpected_over: u64 = over
        .codes
        .iter()
        .filter(|(c, _)| **c != 200 && **c != 429)
        .map(|(_, n)| n)
        .sum();
    let growth = soak.rss_end as f64 / soak.rss_start.max(1) as f64 - 1.0;
    let checks = [
        ("soak: every answer a 200", unexpected_soak == 0),
        (
            "soak: resident memory within 10% of its warm start",
            growth.abs() <= 0.10,
        ),
        (
            "overload: only 200s and 429s (no 5xx, timeouts or dropped connections)",
            unexpected_over == 0,
        ),
    ];
    for (what, ok) in &checks {
        println!("- {what}: {}", if *ok { "**yes**" } else { "**no**" });
    }
    println!("- soak memory growth: {:+.1}%", growth * 100.0);
    if checks.iter().all(|(_, ok)| *ok) {
        Ok(())
    } else {
        anyhow::bail!("a soak or overload property failed")
    }
}
