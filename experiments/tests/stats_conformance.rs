//! The statistics of `experiments::stats` against scipy's, case by case, from
//! `tests/fixtures/experiment_stats.json` (written by `tests/fixtures/gen_experiment_stats.py`:
//! see there how to regenerate it).
//!
//! Every statistic, df, p-value, half-width and quantile must agree within 1e-9 relative
//! (`|got − want| ≤ 1e-9 · max(|got|, |want|)`, with an absolute floor of 1e-300 only so that
//! exact zeros compare equal); the ends of an interval within 1e-9 of its larger end. All
//! cases are checked before a test fails, and each prints the worst error of each quantity
//! (`cargo test --release -p inferd-experiments --test stats_conformance -- --nocapture`).

use std::collections::BTreeMap;

use experiments::stats::{self, Moments};
use serde_json::Value;

const REL_TOL: f64 = 1e-9;
const ABS_FLOOR: f64 = 1e-300;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/experiment_stats.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// A number of the fixture; the strings "inf" / "-inf" stand for infinities (JSON has none).
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("a finite number"),
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => panic!("not a number: {other}"),
    }
}

fn name(case: &Value) -> &str {
    case["name"]
        .as_str()
        .or(case["case"].as_str())
        .unwrap_or("?")
}

/// The samples of a Welch case: integers over `scale`, so both sides use identical f64s.
fn samples(case: &Value, arm: &str) -> Vec<f64> {
    let scale = num(&case["scale"]);
    case[arm]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().expect("an integer sample") as f64 / scale)
        .collect()
}

#[derive(Default)]
struct Checker {
    /// Worst relative error per quantity, with the case it came from.
    worst: BTreeMap<String, (f64, String)>,
    failures: Vec<String>,
    checks: usize,
}

impl Checker {
    fn rel_err(got: f64, want: f64) -> f64 {
        if got == want {
            return 0.0; // also equal infinities
        }
        (got - want).abs() / got.abs().max(want.abs()).max(ABS_FLOOR)
    }

    fn close(&mut self, what: &str, case: &str, got: f64, want: f64) {
        self.checks += 1;
        let err = if got.is_nan() || want.is_nan() {
            f64::INFINITY
        } else {
            Self::rel_err(got, want)
        };
        let w = self
            .worst
            .entry(what.to_owned())
            .or_insert((0.0, String::new()));
        if err > w.0 || w.1.is_empty() {
            *w = (err.max(w.0), case.to_owned());
        }
        let ok =
            got == want || (got - want).abs() <= REL_TOL * got.abs().max(want.abs()).max(ABS_FLOOR);
        if !ok {
            self.failures.push(format!(
                "{what} of {case}: got {got:e}, want {want:e} (relative error {err:.3e})"
            ));
        }
    }

    /// The ends of an interval, each within 1e-9 of the larger end's magnitude: an end near 0
    /// (an interval that nearly touches 0) has no relative precision of its own — it is the
    /// difference of a center and a half-width known to 1e-9 each.
    fn close_interval(&mut self, what: &str, case: &str, got: (f64, f64), want: (f64, f64)) {
        let scale = want.0.abs().max(want.1.abs());
        for (end, g, w) in [("lo", got.0, want.0), ("hi", got.1, want.1)] {
            self.checks += 1;
            let err = if g.is_nan() {
                f64::INFINITY
            } else {
                (g - w).abs() / scale.max(ABS_FLOOR)
            };
            let key = format!("{what} {end} (of |end|max)");
            let worst = self.worst.entry(key).or_insert((0.0, String::new()));
            if err > worst.0 || worst.1.is_empty() {
                *worst = (err.max(worst.0), case.to_owned());
            }
            if err.is_nan() || err > REL_TOL {
                self.failures.push(format!(
                    "{what} {end} of {case}: got {g:e}, want {w:e} (error {err:.3e} of the larger end)"
                ));
            }
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

fn cases<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no {key}"))
}

/// The same moments with the mean moved to 0: intervals around 0 give their half-width
/// exactly (from the ends of an interval around 1e6 it keeps only a few digits).
fn centered(m: &Moments) -> Moments {
    Moments { mean: 0.0, ..*m }
}

/// What a stream gives: one `push` per value.
fn pushed(xs: &[f64]) -> Moments {
    let mut m = Moments::default();
    for &x in xs {
        m.push(x);
    }
    m
}

/// The Chan merge of an uneven split (what merging replicas does).
fn merged(xs: &[f64], f: fn(&[f64]) -> Moments) -> Moments {
    let cut = xs.len() / 3;
    let mut m = f(&xs[..cut]);
    m.merge(&f(&xs[cut..]));
    m
}

/// The textbook one-pass variance, `(Σx² − (Σx)²/n)/(n − 1)`, to show which cases stress it.
fn naive_variance(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (s, s2) = xs.iter().fold((0.0, 0.0), |(s, s2), x| (s + x, s2 + x * x));
    (s2 - s * s / n) / (n - 1.0)
}

fn is_none_case(case: &Value) -> bool {
    case.get("expected").is_some_and(Value::is_null)
}

/// Welch's test on moments from `Moments::from_slice` (two passes, as numpy) and from the
/// Chan merge of two such parts: statistic, df and p-value within 1e-9 of scipy.
#[test]
fn welch_matches_scipy_ttest_ind() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "welch");
    assert!(list.len() >= 12, "{} Welch cases", list.len());
    for case in list {
        let n = name(case);
        let (xa, xb) = (samples(case, "a"), samples(case, "b"));
        let ways = [
            ("", Moments::from_slice(&xa), Moments::from_slice(&xb)),
            (
                " (merged)",
                merged(&xa, Moments::from_slice),
                merged(&xb, Moments::from_slice),
            ),
        ];
        for (label, a, b) in ways {
            let r = stats::welch_t_test(&a, &b);
            if is_none_case(case) {
                c.checks += 1;
                if let Some(r) = r {
                    c.fail(format!("welch {n}{label}: want None, got {r:?}"));
                }
                continue;
            }
            let Some(r) = r else {
                c.fail(format!("welch {n}{label}: got None"));
                continue;
            };
            c.close(
                &format!("statistic{label}"),
                n,
                r.statistic,
                num(&case["statistic"]),
            );
            c.close(&format!("df{label}"), n, r.df, num(&case["df"]));
            c.close(
                &format!("p_value{label}"),
                n,
                r.p_value,
                num(&case["p_value"]),
            );
        }
    }
    c.finish("welch", 15 * 6);
}

/// The streaming path (`push`, and merges of pushed parts) on the same cases. Variances and
/// df within 1e-9 of numpy's and scipy's — including around 1e6, where the textbook formula
/// is checked to fail. A streamed mean drifts by about √n ulps of itself, so the statistic
/// (mean_b − mean_a)/se is held to 1e-9 plus that drift over the difference of the means.
#[test]
fn welford_streams_match_numpy() {
    let doc = fixture();
    let mut c = Checker::default();
    let mut stressed = 0;
    for case in cases(&doc, "welch") {
        if is_none_case(case) {
            continue;
        }
        let n = name(case);
        let (xa, xb) = (samples(case, "a"), samples(case, "b"));
        for (label, a, b) in [
            ("pushed", pushed(&xa), pushed(&xb)),
            ("merged", merged(&xa, pushed), merged(&xb, pushed)),
        ] {
            for (arm, m, xs) in [("a", &a, &xa), ("b", &b, &xb)] {
                let (mean, var) = (
                    num(&case[&format!("mean_{arm}")]),
                    num(&case[&format!("var_{arm}")]),
                );
                c.close(&format!("variance ({label})"), n, m.variance(), var);
                c.checks += 1;
                let drift = 4.0 * (xs.len() as f64).sqrt() * f64::EPSILON * mean.abs();
                if (m.mean - mean).abs() > drift.max(1e-300) {
                    c.fail(format!(
                        "mean ({label}) of {n}/{arm}: {} vs numpy {mean} (allowed {drift:e})",
                        m.mean
                    ));
                }
            }
            let Some(r) = stats::welch_t_test(&a, &b) else {
                c.fail(format!("welch {n} ({label}): got None"));
                continue;
            };
            c.close(&format!("df ({label})"), n, r.df, num(&case["df"]));
            let want = num(&case["statistic"]);
            let (ma, mb) = (num(&case["mean_a"]), num(&case["mean_b"]));
            let drift =
                4.0 * ((xa.len() + xb.len()) as f64).sqrt() * f64::EPSILON * (ma.abs() + mb.abs())
                    / (mb - ma).abs();
            let err = Checker::rel_err(r.statistic, want);
            c.checks += 1;
            if err > REL_TOL + drift {
                c.fail(format!(
                    "statistic ({label}) of {n}: {} vs {want} (relative error {err:.3e}, allowed {:.3e})",
                    r.statistic,
                    REL_TOL + drift
                ));
            }
        }
        for (arm, xs) in [("a", &xa), ("b", &xb)] {
            if n.starts_with("large_mean") {
                stressed += 1;
                let var = num(&case[&format!("var_{arm}")]);
                let err = Checker::rel_err(naive_variance(xs), var);
                c.checks += 1;
                println!("  naive Σx² variance of {n}/{arm}: relative error {err:.3e}");
                if err <= 100.0 * REL_TOL {
                    c.fail(format!(
                        "{n}/{arm} does not stress the textbook variance (error {err:.3e})"
                    ));
                }
            }
        }
    }
    assert_eq!(stressed, 4, "the fixture lost its large-mean cases");
    c.finish("welford", 15 * 12);
}

/// Large samples given by their moments (df up to 2e8), against
/// `scipy.stats.ttest_ind_from_stats` and `scipy.stats.t.ppf`.
#[test]
fn welch_from_moments_matches_scipy_at_large_df() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "welch_from_stats");
    for case in list {
        let n = name(case);
        let arm = |k: &str| {
            let v = &case[k];
            let (count, std) = (v["n"].as_u64().unwrap(), num(&v["std"]));
            Moments {
                n: count,
                mean: num(&v["mean"]),
                m2: std * std * (count - 1) as f64,
            }
        };
        let (a, b) = (arm("a"), arm("b"));
        let Some(r) = stats::welch_t_test(&a, &b) else {
            c.fail(format!("welch {n}: got None"));
            continue;
        };
        c.close("statistic", n, r.statistic, num(&case["statistic"]));
        c.close("df", n, r.df, num(&case["df"]));
        c.close("p_value", n, r.p_value, num(&case["p_value"]));
        match stats::compare(&centered(&a), &centered(&b), num(&case["level"])) {
            Some(cmp) => c.close(
                "difference_ci half width",
                n,
                cmp.difference_ci.1,
                num(&case["difference_half_width"]),
            ),
            None => c.fail(format!("compare {n}: got None")),
        }
    }
    c.finish("welch_from_stats", 10 * 4);
}

#[test]
fn two_proportion_z_matches_scipy_chi2_contingency() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "two_proportion_z");
    assert!(list.len() >= 10);
    for case in list {
        let n = name(case);
        let get = |k: &str| case[k].as_u64().unwrap();
        let r = stats::two_proportion_z_test(
            get("successes_a"),
            get("n_a"),
            get("successes_b"),
            get("n_b"),
        );
        if case.get("expected").is_some_and(Value::is_null) {
            if let Some(r) = r {
                c.fail(format!("z {n}: want None, got {r:?}"));
            }
            c.checks += 1;
            continue;
        }
        let Some(r) = r else {
            c.fail(format!("z {n}: got None"));
            continue;
        };
        c.close("z", n, r.statistic, num(&case["statistic"]));
        c.close(
            "z² vs chi2",
            n,
            r.statistic * r.statistic,
            num(&case["chi2"]),
        );
        c.close("p_value", n, r.p_value, num(&case["p_value"]));
        if !r.df.is_nan() {
            c.fail(format!("z {n}: df should be NaN, got {}", r.df));
        }
    }
    c.finish("two_proportion_z", 10 * 3);
}

#[test]
fn chi_square_gof_matches_scipy_chisquare() {
    let doc = fixture();
    let mut c = Checker::default();
    let list = cases(&doc, "chi_square_gof");
    assert!(list.len() >= 10);
    for case in list {
        let n = name(case);
        let observed: Vec<u64> = case["observed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let weights: Vec<f64> = case["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .collect();
        let r = stats::chi_square_gof(&observed, &weights);
        if case.get("expected").is_some_and(Value::is_null) {
            if let Some(r) = r {
                c.fail(format!("chi2 {n}: want None, got {r:?}"));
            }
            c.checks += 1;
            continue;
        }
        let Some(r) = r else {
            c.fail(format!("chi2 {n}: got None"));
            continue;
        };
        c.close("statistic", n, r.statistic, num(&case["statistic"]));
        c.close("df", n, r.df, num(&case["df"]));
        c.close("p_value", n, r.p_value, num(&case["p_value"]));
    }
    c.finish("chi_square_gof", 10 * 3);
}

fn welch_case<'a>(doc: &'a Value, n: &str) -> &'a Value {
    cases(doc, "welch")
        .iter()
        .find(|c| name(c) == n)
        .unwrap_or_else(|| panic!("no Welch case {n}"))
}

fn pair(v: &Value) -> (f64, f64) {
    (num(&v[0]), num(&v[1]))
}

#[test]
fn intervals_match_scipy_quantiles() {
    let doc = fixture();
    let mut c = Checker::default();
    for e in cases(&doc, "mean_ci") {
        let n = format!("{}/{}", name(e), e["arm"].as_str().unwrap());
        let xs = samples(welch_case(&doc, name(e)), e["arm"].as_str().unwrap());
        let level = num(&e["level"]);
        let m = Moments::from_slice(&xs);
        let (Some((lo, hi)), Some((_, h))) = (
            stats::mean_ci(&m, level),
            stats::mean_ci(&centered(&m), level),
        ) else {
            c.fail(format!("mean_ci {n}: got None"));
            continue;
        };
        c.close_interval("mean_ci", &n, (lo, hi), (num(&e["lo"]), num(&e["hi"])));
        c.close("mean_ci half width", &n, h, num(&e["half_width"]));
    }
    for e in cases(&doc, "compare") {
        let n = name(e);
        let case = welch_case(&doc, n);
        let (a, b) = (
            Moments::from_slice(&samples(case, "a")),
            Moments::from_slice(&samples(case, "b")),
        );
        let level = num(&e["level"]);
        let Some(r) = stats::compare(&a, &b, level) else {
            c.fail(format!("compare {n}: got None"));
            continue;
        };
        c.close("difference", n, r.difference, num(&e["difference"]));
        if let Some(ci) = e.get("difference_ci") {
            c.close_interval("difference_ci", n, r.difference_ci, pair(ci));
            let h = stats::compare(&centered(&a), &centered(&b), level)
                .map_or(f64::NAN, |r| r.difference_ci.1);
            c.close(
                "difference_ci half width",
                n,
                h,
                num(&e["difference_half_width"]),
            );
        }
        match (e.get("relative_lift"), r.relative_lift, r.relative_lift_ci) {
            (Some(want), Some(lift), Some((lo, hi))) => {
                c.close("relative_lift", n, lift, num(want));
                c.close_interval(
                    "relative_lift_ci",
                    n,
                    (lo, hi),
                    pair(&e["relative_lift_ci"]),
                );
                c.close(
                    "relative_lift half width",
                    n,
                    (hi - lo) / 2.0,
                    num(&e["relative_lift_half_width"]),
                );
            }
            (None, None, None) => {}
            (want, got, ci) => c.fail(format!(
                "compare {n}: relative lift {got:?} {ci:?}, want {want:?}"
            )),
        }
    }
    for e in cases(&doc, "always_valid") {
        let n = name(e);
        let case = welch_case(&doc, n);
        let (a, b) = (
            Moments::from_slice(&samples(case, "a")),
            Moments::from_slice(&samples(case, "b")),
        );
        let Some(r) = stats::always_valid(&a, &b, num(&e["alpha"]), num(&e["tuning"])) else {
            c.fail(format!("always_valid {n}: got None"));
            continue;
        };
        c.close("always_valid p", n, r.p_value, num(&e["p_value"]));
        c.close_interval("always_valid ci", n, r.ci, pair(&e["ci"]));
        let h = stats::always_valid(
            &centered(&a),
            &centered(&b),
            num(&e["alpha"]),
            num(&e["tuning"]),
        )
        .map_or(f64::NAN, |r| r.ci.1);
        c.close("always_valid half width", n, h, num(&e["half_width"]));
    }
    c.finish("intervals", 12 * 3 * 2 + 12 * 4 + 12 * 4);
}

#[test]
fn histogram_quantile_matches_prometheus() {
    let doc = fixture();
    let mut c = Checker::default();
    for case in cases(&doc, "histogram_quantile") {
        let n = name(case);
        let ub: Vec<f64> = case["upper_bounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .collect();
        let counts: Vec<u64> = case["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        for qv in case["quantiles"].as_array().unwrap() {
            let q = num(&qv[0]);
            let label = format!("{n} q={q}");
            match (stats::histogram_quantile(&ub, &counts, q), qv[1].is_null()) {
                (Some(got), false) => c.close("quantile", &label, got, num(&qv[1])),
                (None, true) => c.checks += 1,
                (got, _) => c.fail(format!("{label}: got {got:?}, want {}", qv[1])),
            }
        }
    }
    c.finish("histogram_quantile", 15);
}
