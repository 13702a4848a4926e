//! `drift::stats` against scipy's and Evidently's own functions, case by case, from
//! `tests/fixtures/drift_stats.json` (written by `tests/fixtures/gen_drift_stats.py`: see there
//! how to regenerate it and which function gave each value).
//!
//! Every statistic, p-value, distance, bin share and bin edge must agree within 1e-9 relative
//! (`|got − want| ≤ 1e-9 · max(|got|, |want|)`, an absolute floor of 1e-300 only so that exact
//! zeros compare equal; NaN only where the reference gives NaN), the KS method and every
//! Benjamini–Hochberg decision exactly. All cases are checked before a test fails, and each
//! prints the worst error of each quantity
//! (`cargo test --release -p inferd-drift --test stats_conformance -- --nocapture`).

use std::collections::BTreeMap;

use drift::embedding::SplitMix64;
use drift::stats::{self, KsMethod};
use serde_json::Value;

const REL_TOL: f64 = 1e-9;
const ABS_FLOOR: f64 = 1e-300;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/drift_stats.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// A number of the fixture; "nan", "inf" and "-inf" stand for what JSON cannot write.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("a number"),
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => panic!("not a number: {other}"),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(num)
        .collect()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().expect("a count"))
        .collect()
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

fn cases<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no {key}"))
}

/// A sample as the monitor receives it: the listed integers over their power-of-two scale, or
/// the script's SplitMix64 generator (value k: `((top 16 bits of draws 4k..4k+3 summed) −
/// 131070 + shift) >> q` over `2^(15 − q)`), then the non-finite extras.
fn sample(spec: &Value) -> Vec<f64> {
    let mut out: Vec<f64> = if let Some(g) = spec.get("generate") {
        let mut rng = SplitMix64::new(g["seed"].as_u64().unwrap());
        let rows = g["rows"].as_u64().unwrap();
        let shift = g["shift"].as_i64().unwrap();
        let q = g["q"].as_u64().unwrap();
        let scale = (1u64 << (15 - q)) as f64;
        (0..rows)
            .map(|_| {
                let x: i64 =
                    (0..4).map(|_| (rng.next_u64() >> 48) as i64).sum::<i64>() - 131_070 + shift;
                (x >> q) as f64 / scale
            })
            .collect()
    } else {
        let scale = spec["scale"].as_i64().unwrap();
        assert!(
            scale > 0 && scale & (scale - 1) == 0,
            "{scale}: a power of two"
        );
        spec["ints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_i64().unwrap() as f64 / scale as f64)
            .collect()
    };
    if let Some(extras) = spec.get("extras") {
        out.extend(nums(extras));
    }
    out
}

#[derive(Default)]
struct Checker {
    /// Worst relative error per quantity, with the case it came from.
    worst: BTreeMap<String, (f64, String)>,
    failures: Vec<String>,
    checks: usize,
}

impl Checker {
    fn close(&mut self, what: &str, case: &str, got: f64, want: f64) {
        self.checks += 1;
        let err = if got == want || (got.is_nan() && want.is_nan()) {
            0.0
        } else if got.is_nan() || want.is_nan() || got.is_infinite() || want.is_infinite() {
            f64::INFINITY
        } else {
            (got - want).abs() / got.abs().max(want.abs()).max(ABS_FLOOR)
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
                "{what} of {case}: got {got:e}, want {want:e} (relative error {err:.3e})"
            ));
        }
    }

    fn all_close(&mut self, what: &str, case: &str, got: &[f64], want: &[f64]) {
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

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, case: &str, got: T, want: T) {
        self.checks += 1;
        if got != want {
            self.failures
                .push(format!("{what} of {case}: got {got:?}, want {want:?}"));
        }
    }

    fn fail(&mut self, msg: String) {
        self.checks += 1;
        self.failures.push(msg);
    }

    fn finish(self, section: &str, min_checks: usize) {
        println!("{section}: {} checks; worst relative errors:", self.checks);
        for (what, (err, case)) in &self.worst {
            println!("  {what:<28} {err:.3e}  ({case})");
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

/// The finite, sorted reference and current samples of a numeric case, checking that the
/// non-finite extras are what was dropped.
fn numeric_samples(c: &mut Checker, case: &Value) -> (Vec<f64>, Vec<f64>) {
    let n = name(case);
    let mut side = |key: &str| {
        let raw = sample(&case[key]);
        let extras = case[key].get("extras").map_or(0, |e| nums(e).len());
        let (kept, dropped) = stats::finite_sorted(&raw);
        c.equal(&format!("dropped non-finite ({key})"), n, dropped, extras);
        kept
    };
    (side("reference"), side("current"))
}

fn check_binned(c: &mut Checker, what: &str, case: &str, got: &stats::Binned, want: &Value) {
    c.all_close(
        &format!("{what} reference shares"),
        case,
        &got.reference,
        &nums(&want["reference"]),
    );
    c.all_close(
        &format!("{what} current shares"),
        case,
        &got.current,
        &nums(&want["current"]),
    );
    match (&got.edges, want.get("edges")) {
        (Some(edges), Some(w)) => c.all_close(&format!("{what} edges"), case, edges, &nums(w)),
        (None, None) => {}
        (got_edges, _) => c.fail(format!(
            "{what} of {case}: binned by {}, want by {}",
            if got_edges.is_some() {
                "edges"
            } else {
                "value"
            },
            if want.get("edges").is_some() {
                "edges"
            } else {
                "value"
            },
        )),
    }
    if let Some(values) = want.get("values") {
        c.all_close(&format!("{what} values"), case, &got.values, &nums(values));
    }
}

/// KS (statistic, p-value, method) equal to scipy's `ks_2samp`, including the ties, the
/// one-row samples, constants, 10,000 against 10,000 (exact) and 10,000 against 10,001 and
/// beyond (asymptotic); scipy's and Evidently's Wasserstein distances.
#[test]
fn ks_and_wasserstein_match_scipy_and_evidently() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "numeric");
    assert!(list.len() >= 16, "{} numeric cases", list.len());
    for case in list {
        let n = name(case);
        let (r, cur) = numeric_samples(&mut c, case);
        let ks = stats::ks_2samp(&r, &cur);
        c.close(
            "ks statistic",
            n,
            ks.statistic,
            num(&case["ks"]["statistic"]),
        );
        c.close("ks pvalue", n, ks.pvalue, num(&case["ks"]["pvalue"]));
        let want = match case["ks"]["method"].as_str() {
            Some("exact") => KsMethod::Exact,
            Some("asymptotic") => KsMethod::Asymptotic,
            other => panic!("method {other:?}"),
        };
        c.equal("ks method", n, ks.method, want);
        c.close(
            "wasserstein",
            n,
            stats::wasserstein_distance(&r, &cur),
            num(&case["wasserstein"]),
        );
        c.close(
            "wasserstein normed",
            n,
            stats::wasserstein_normed(&r, &cur),
            num(&case["wasserstein_normed"]),
        );
    }
    c.finish("ks and wasserstein", 16 * 7);
}

/// Evidently's binned scores of numeric columns — PSI, KL, Jensen–Shannon on
/// `get_binned_data` (Sturges bins past 20 distinct reference values, else a bin per value,
/// zero shares filled for PSI and KL), and its own-binned Hellinger — and the bins themselves.
#[test]
fn binned_numeric_scores_match_evidently() {
    let doc = fixture();
    let mut c = Checker::default();
    for case in cases(&doc, "numeric") {
        let n = name(case);
        let (r, cur) = numeric_samples(&mut c, case);
        let filled = stats::binned_numeric(&r, &cur, true);
        let unfilled = stats::binned_numeric(&r, &cur, false);
        check_binned(&mut c, "binned", n, &filled, &case["binned"]);
        check_binned(
            &mut c,
            "binned unfilled",
            n,
            &unfilled,
            &case["binned_unfilled"],
        );
        c.close(
            "psi",
            n,
            stats::psi(&filled.reference, &filled.current),
            num(&case["psi"]),
        );
        c.close(
            "kl_div",
            n,
            stats::kl_div(&filled.reference, &filled.current),
            num(&case["kl_div"]),
        );
        c.close(
            "jensenshannon",
            n,
            stats::jensenshannon(&unfilled.reference, &unfilled.current),
            num(&case["jensenshannon"]),
        );
        c.close(
            "hellinger",
            n,
            stats::hellinger_numeric(&r, &cur),
            num(&case["hellinger"]),
        );
    }
    c.finish("binned numeric", 16 * 10);
}

/// Categorical columns: chi-square and Z (statistic and p-value, with scipy's edge cases: a
/// class absent from the reference, a single class), PSI, KL, Jensen–Shannon and Hellinger
/// over the classes, and the binned shares.
#[test]
fn categorical_tests_match_scipy_and_evidently() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "categorical");
    assert!(list.len() >= 10, "{} categorical cases", list.len());
    for case in list {
        let n = name(case);
        let (r, cur) = (counts(&case["reference"]), counts(&case["current"]));
        let (stat, p) = stats::chisquare(&r, &cur);
        c.close(
            "chisquare statistic",
            n,
            stat,
            num(&case["chisquare"]["statistic"]),
        );
        c.close("chisquare pvalue", n, p, num(&case["chisquare"]["pvalue"]));
        let (z, p) = stats::z_test(&r, &cur);
        c.close("z statistic", n, z, num(&case["z"]["statistic"]));
        c.close("z pvalue", n, p, num(&case["z"]["pvalue"]));
        let filled = stats::binned_categorical(&r, &cur, true);
        let unfilled = stats::binned_categorical(&r, &cur, false);
        check_binned(&mut c, "binned", n, &filled, &case["binned"]);
        check_binned(
            &mut c,
            "binned unfilled",
            n,
            &unfilled,
            &case["binned_unfilled"],
        );
        c.close(
            "psi",
            n,
            stats::psi(&filled.reference, &filled.current),
            num(&case["psi"]),
        );
        c.close(
            "kl_div",
            n,
            stats::kl_div(&filled.reference, &filled.current),
            num(&case["kl_div"]),
        );
        c.close(
            "jensenshannon",
            n,
            stats::jensenshannon(&unfilled.reference, &unfilled.current),
            num(&case["jensenshannon"]),
        );
        c.close(
            "hellinger",
            n,
            stats::hellinger_categorical(&r, &cur),
            num(&case["hellinger"]),
        );
    }
    c.finish("categorical", 10 * 12);
}

/// `kstwo.sf(x, n)` from n = 1 to 10^6 and x from 1e-4 to 1.
#[test]
fn kstwo_sf_matches_scipy() {
    let doc = fixture();
    let mut c = Checker::default();
    for case in cases(&doc, "kstwo") {
        let n = case["n"].as_u64().unwrap();
        let x = num(&case["x"]);
        let what = format!("n = {n}, x = {x}");
        c.close("kstwo sf", &what, stats::kstwo_sf(n, x), num(&case["sf"]));
    }
    c.finish("kstwo", 150);
}

/// Benjamini–Hochberg decisions equal to scipy's `false_discovery_control(p) <= q`.
#[test]
fn benjamini_hochberg_matches_scipy() {
    let doc = fixture();
    let mut c = Checker::default();
    for (i, case) in cases(&doc, "corrections").iter().enumerate() {
        let p = nums(&case["pvalues"]);
        let q = num(&case["q"]);
        let want: Vec<bool> = case["benjamini_hochberg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let what = format!("case {i} (m = {}, q = {q})", p.len());
        c.equal("decisions", &what, stats::benjamini_hochberg(&p, q), want);
    }
    c.finish("benjamini-hochberg", 15);
}
