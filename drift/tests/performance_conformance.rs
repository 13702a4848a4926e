//! `drift::performance` against scikit-learn, case by case, from
//! `tests/fixtures/drift_performance.json` (written by `tests/fixtures/gen_drift_performance.py`:
//! see there how to regenerate it and which scikit-learn calls each value comes from).
//!
//! Every metric must agree within 1e-9 relative (`|got − want| ≤ 1e-9 · max(|got|, |want|)`,
//! with an absolute floor of 1e-300 only so that exact zeros compare equal), and an undefined
//! one (ROC AUC, R²: `null` in the fixture) must be `None`. All cases are checked before a
//! test fails, and each prints the worst error of each quantity
//! (`cargo test --release -p inferd-drift --test performance_conformance -- --nocapture`).

use drift::performance;
use serde_json::Value;

mod common;
use common::{Checker, cases, name};

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("not an integer: {x}")))
        .collect()
}

fn labels(v: &Value) -> Vec<u32> {
    ints(v)
        .into_iter()
        .map(|i| u32::try_from(i).unwrap())
        .collect()
}

/// Integers over a power-of-two scale, so that both sides use identical numbers.
fn scaled(v: &Value, scale: i64) -> Vec<f64> {
    assert!(
        scale > 0 && scale & (scale - 1) == 0,
        "the scale {scale} is a power of two"
    );
    ints(v)
        .into_iter()
        .map(|i| {
            assert!(i.abs() < 1 << 53);
            i as f64 / scale as f64
        })
        .collect()
}

#[test]
fn classification_matches_sklearn() {
    let doc = common::fixture("drift_performance.json");
    let mut c = Checker::default();
    let list = cases(&doc, "classification");
    assert!(list.len() >= 24, "{} classification cases", list.len());
    for case in list {
        let n = name(case);
        let k = usize::try_from(case["n_classes"].as_u64().unwrap()).unwrap();
        let (truth, predicted) = (labels(&case["truth"]), labels(&case["predicted"]));
        let scores: Option<Vec<f32>> = (!case["scores"].is_null()).then(|| {
            let scale = case["score_scale"].as_i64().unwrap();
            assert!(scale > 0 && scale & (scale - 1) == 0);
            ints(&case["scores"])
                .into_iter()
                .map(|i| {
                    assert!(i.abs() < 1 << 24, "{i} is exact in f32");
                    i as f32 / scale as f32
                })
                .collect()
        });
        let got = performance::classification(&truth, &predicted, scores.as_deref(), k);
        let checked = performance::try_classification(&truth, &predicted, scores.as_deref(), k);
        c.equal("try_classification", n, checked.as_ref(), Ok(&got));
        c.equal("n", n, got.n, truth.len());
        for (what, value) in [
            ("accuracy", got.accuracy),
            ("precision", got.precision),
            ("recall", got.recall),
            ("f1", got.f1),
        ] {
            let want = case[what]
                .as_f64()
                .unwrap_or_else(|| panic!("{n} has no {what}"));
            c.close(what, n, value, want);
        }
        c.close_opt("roc_auc", n, got.roc_auc, &case["roc_auc"]);
    }
    c.finish("classification", 7 * 24);
}

#[test]
fn regression_matches_sklearn() {
    let doc = common::fixture("drift_performance.json");
    let mut c = Checker::default();
    let list = cases(&doc, "regression");
    assert!(list.len() >= 10, "{} regression cases", list.len());
    for case in list {
        let n = name(case);
        let scale = case["scale"].as_i64().unwrap();
        let (truth, predicted) = (
            scaled(&case["truth"], scale),
            scaled(&case["predicted"], scale),
        );
        let got = performance::regression(&truth, &predicted);
        c.equal(
            "try_regression",
            n,
            performance::try_regression(&truth, &predicted),
            Ok(got.clone()),
        );
        c.equal("n", n, got.n, truth.len());
        c.close("mae", n, got.mae, case["mae"].as_f64().unwrap());
        c.close("rmse", n, got.rmse, case["rmse"].as_f64().unwrap());
        c.close_opt("r2", n, got.r2, &case["r2"]);
        if got.r2.is_none() {
            println!("  {n}: r2 None (scikit-learn: {})", case["r2_sklearn"]);
        }
    }
    c.finish("regression", 5 * 10);
}
