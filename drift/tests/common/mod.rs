//! What the drift conformance tests share: their fixtures (under `tests/fixtures/`), and the
//! checker that compares every value at 1e-9 relative, keeps the worst error per quantity,
//! and fails once, at the end, with every mismatch.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;

use serde_json::Value;

pub const REL_TOL: f64 = 1e-9;
/// Only so that exact zeros compare equal.
pub const ABS_FLOOR: f64 = 1e-300;

/// `tests/fixtures/<file>`, parsed.
pub fn fixture(file: &str) -> Value {
    let path = format!("{}/../tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

pub fn cases<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no {key}"))
}

pub fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

#[derive(Default)]
pub struct Checker {
    /// Worst error per quantity, with the case it came from.
    worst: BTreeMap<String, (f64, String)>,
    failures: Vec<String>,
    pub checks: usize,
}

impl Checker {
    /// `|got − want| ≤ 1e-9 · max(|got|, |want|, scale)`; the error kept is relative to that
    /// same magnitude. NaN matches only NaN; an infinity only the same infinity.
    pub fn close_to(&mut self, what: &str, case: &str, got: f64, want: f64, scale: f64) {
        self.checks += 1;
        let size = got.abs().max(want.abs()).max(scale).max(ABS_FLOOR);
        let err = if got == want || (got.is_nan() && want.is_nan()) {
            0.0
        } else if got.is_nan() || want.is_nan() || got.is_infinite() || want.is_infinite() {
            f64::INFINITY
        } else {
            (got - want).abs() / size
        };
        let w = self
            .worst
            .entry(what.to_owned())
            .or_insert((0.0, String::new()));
        if err > w.0 || w.1.is_empty() {
            *w = (err.max(w.0), case.to_owned());
        }
        if err > REL_TOL {
            self.failures.push(format!(
                "{what} of {case}: got {got:e}, want {want:e} (error {err:.3e})"
            ));
        }
    }

    pub fn close(&mut self, what: &str, case: &str, got: f64, want: f64) {
        self.close_to(what, case, got, want, 0.0);
    }

    /// An optional value: `null` in the fixture must be `None`, a number close.
    pub fn close_opt(&mut self, what: &str, case: &str, got: Option<f64>, want: &Value) {
        match (got, want.as_f64()) {
            (Some(g), Some(w)) => self.close(what, case, g, w),
            (None, None) if want.is_null() => self.checks += 1,
            (g, _) => self.fail(format!("{what} of {case}: got {g:?}, want {want}")),
        }
    }

    pub fn all_close(&mut self, what: &str, case: &str, got: &[f64], want: &[f64]) {
        if got.len() != want.len() {
            self.fail(format!(
                "{what} of {case}: {} values, want {}",
                got.len(),
                want.len()
            ));
            return;
        }
        for (g, w) in got.iter().zip(want) {
            self.close(what, case, *g, *w);
        }
    }

    pub fn equal<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        case: &str,
        got: T,
        want: T,
    ) {
        self.checks += 1;
        if got != want {
            self.failures
                .push(format!("{what} of {case}: got {got:?}, want {want:?}"));
        }
    }

    pub fn fail(&mut self, msg: String) {
        self.checks += 1;
        self.failures.push(msg);
    }

    pub fn finish(self, section: &str, min_checks: usize) {
        println!("{section}: {} checks; worst errors:", self.checks);
        for (what, (err, case)) in &self.worst {
            println!("  {what:<34} {err:.3e}  ({case})");
        }
        assert!(
            self.checks >= min_checks,
            "{section}: only {} checks ran (the fixture lost cases?)",
            self.checks
        );
        assert!(
            self.failures.is_empty(),
            "{section}: {} of {} checks failed:\n  {}",
            self.failures.len(),
            self.checks,
            self.failures.join("\n  ")
        );
    }
}
