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

use drift::embedding::SplitMix64;
use drift::stats::{self, KsMethod};
use serde_json::Value;

mod common;
use common::{Checker, cases, name};

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

/// The bins with and without zero fill, and the scores Evidently computes on them: PSI and
/// KL on the filled shares, Jensen–Shannon on the unfilled ones.
fn check_binned_scores(
    c: &mut Checker,
    n: &str,
    filled: &stats::Binned,
    unfilled: &stats::Binned,
    case: &Value,
) {
    check_binned(c, "binned", n, filled, &case["binned"]);
    check_binned(c, "binned unfilled", n, unfilled, &case["binned_unfilled"]);
    let psi = stats::psi(&filled.reference, &filled.current);
    c.close("psi", n, psi, num(&case["psi"]));
    let kl = stats::kl_div(&filled.reference, &filled.current);
    c.close("kl_div", n, kl, num(&case["kl_div"]));
    let js = stats::jensenshannon(&unfilled.reference, &unfilled.current);
    c.close("jensenshannon", n, js, num(&case["jensenshannon"]));
}

/// KS (statistic, p-value, method) equal to scipy's `ks_2samp`, including the ties, the
/// one-row samples, constants, 10,000 against 10,000 (exact) and 10,000 against 10,001 and
/// beyond (asymptotic); scipy's and Evidently's Wasserstein distances.
#[test]
fn ks_and_wasserstein_match_scipy_and_evidently() {
    let doc = common::fixture("drift_stats.json");
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
    let doc = common::fixture("drift_stats.json");
    let mut c = Checker::default();
    for case in cases(&doc, "numeric") {
        let n = name(case);
        let (r, cur) = numeric_samples(&mut c, case);
        let filled = stats::binned_numeric(&r, &cur, true);
        let unfilled = stats::binned_numeric(&r, &cur, false);
        check_binned_scores(&mut c, n, &filled, &unfilled, case);
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
    let doc = common::fixture("drift_stats.json");
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
        check_binned_scores(&mut c, n, &filled, &unfilled, case);
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
    let doc = common::fixture("drift_stats.json");
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
    let doc = common::fixture("drift_stats.json");
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
