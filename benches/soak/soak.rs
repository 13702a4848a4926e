//! The soak and overload run (benches/soak/run.sh starts the server and calls this):
//!
//! 1. capacity: closed loop, `--concurrency` workers sending the request back to back for
//!    `--capacity-secs`: the request rate the server sustains, C;
//! 2. soak: open loop at `--soak-load` × C (default 0.8) for `--soak-secs`, from twice
//!    `--concurrency` connections: every answer must
//!    be a 200, and the server's resident memory at the end within 10% of where it was after
//!    the first tenth of the run (warm);
//! 3. overload: open loop at `--overload-load` × C (default 2) for `--overload-secs`, from
//!    `--overload-connections` (768): the
//!    excess must be refused (429, `Retry-After`) promptly — no timeouts, no 5xx, no dropped
//!    connections, memory bounded.
//!
//! Open loop per connection, as wrk2: each connection sends on its own schedule and a late
//! answer does not push the schedule back (latencies count from when a request was due).
//! Prints a markdown report; exits non-zero when a property fails.

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
    /// Connections of the overload phase (above the server's 512 requests in flight per
    /// principal, so that its limit is what answers).
    #[arg(long, default_value_t = 768)]
    overload_connections: usize,
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

/// Sends at `rate` per second for `secs` from `workers` connections, each on its own
/// schedule (worker `i` sends its `k`-th request at `(k·workers + i) / rate`), as wrk2 does:
/// a late answer does not delay the schedule — the next request goes at once — so the
/// offered load stays `rate` up to what `workers` connections can carry, and latencies are
/// counted from when a request was due (no coordinated omission).
async fn open_loop(
    a: &Args,
    body: &bytes::Bytes,
    rate: f64,
    secs: f64,
    workers: usize,
) -> anyhow::Result<Tally> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(workers)
        .build()?;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let sampler = {
        let pid = a.pid;
        tokio::spawn(async move {
            // (warm RSS after a tenth of the run, max)
            tokio::time::sleep(Duration::from_secs_f64(secs / 10.0)).await;
            let warm = rss_kib(pid);
            let mut max = warm;
            while tokio::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(500)).await;
                max = max.max(rss_kib(pid));
            }
            (warm, max)
        })
    };
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (c, url, body) = (c.clone(), a.url.clone(), body.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                for k in 0u64.. {
                    let due = start
                        + Duration::from_secs_f64((k as f64 * workers as f64 + i as f64) / rate);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    let (code, answered_us) = one(&c, &url, &body).await;
                    let us = due.elapsed().as_micros() as u64;
                    t.sent += 1;
                    *t.codes.entry(code).or_default() += 1;
                    match code {
                        200 => t.ok_us.push(us),
                        // How promptly a refusal comes: from when it was sent.
                        429 => t.refused_us.push(answered_us),
                        _ => {}
                    }
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?;
        total.sent += t.sent;
        for (code, n) in t.codes {
            *total.codes.entry(code).or_default() += n;
        }
        total.ok_us.extend(t.ok_us);
        total.refused_us.extend(t.refused_us);
    }
    total.wall = start.elapsed().as_secs_f64();
    let (warm, max) = sampler.await?;
    total.rss_start = warm;
    total.rss_end = rss_kib(a.pid);
    total.rss_max = max.max(total.rss_end);
    Ok(total)
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
    let mut soak = open_loop(&a, &body, soak_rate, a.soak_secs, a.concurrency * 2).await?;
    eprintln!("soak done: {:?}", soak.codes);
    let over_rate = cap * a.overload_load;
    // More connections than the server lets one principal have in flight (512): the excess
    // must come back as 429s.
    let mut over = open_loop(
        &a,
        &body,
        over_rate,
        a.overload_secs,
        a.overload_connections,
    )
    .await?;
    eprintln!("overload done: {:?}", over.codes);

    println!(
        "Capacity (closed loop, {} workers, {:.0} s): **{cap:.0} req/s**.",
        a.concurrency, a.capacity_secs
    );
    println!();
    println!(
        "| phase | target req/s | sent req/s | 200 | 429 | other (5xx, no answer) | 200 p50 / p99 ms (from due) | 429 p99 ms (from sent) | server RSS (warm → end) |"
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
