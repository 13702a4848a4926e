//! `drift::embedding` against its references, case by case, from
//! `tests/fixtures/drift_embedding.json` (written by `tests/fixtures/gen_drift_embedding.py`:
//! see there how to regenerate it and what each reference is).
//!
//! - MMD: the p-value must equal the fixture's exactly (the NumPy transcription that sums in
//!   this crate's order over the same SplitMix64 permutations); `sigma` within 1e-9 relative
//!   of the plain NumPy transcription of Alibi Detect's code, and `mmd2` within 1e-9 of the
//!   larger of `|mmd2|` and the size of the terms it is a difference of
//!   (`c_xx ΣK_xx + c_yy ΣK_yy`: an MMD² near 0 keeps only the digits the terms leave it);
//!   both also within 1e-9 relative of the transcription in this crate's order (with the same
//!   libm `exp` they are the same bits: the test prints how many are).
//! - Mean distance: within 1e-9 relative of Evidently's `distance()` score (an exact 0 must be
//!   0), and the same verdict.
//!
//! All cases are checked before a test fails, and each prints the worst error of each
//! quantity (`cargo test --release -p inferd-drift --test embedding_conformance --
//! --nocapture`), and the time of the MMD test on the largest samples.

use std::collections::BTreeMap;
use std::time::Instant;

use drift::embedding::{self, SplitMix64};
use serde_json::Value;

mod common;
use common::{Checker, cases, name};

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The f32 values of a stored sample: listed integers over a power-of-two scale, or the
/// script's SplitMix64 generator (value k: the top 16 bits of draws 4k..4k+3 summed,
/// − 131070 + shift, over 2^15).
fn sample(spec: &Value, dim: usize) -> Vec<f32> {
    let ints: Vec<i64>;
    let scale: i64;
    if let Some(g) = spec.get("generate") {
        let seed = g["seed"].as_u64().expect("a u64 seed");
        let rows = usize::try_from(int(&g["rows"])).unwrap();
        let shift = int(&g["shift"]);
        let mut rng = SplitMix64::new(seed);
        ints = (0..rows * dim)
            .map(|_| (0..4).map(|_| (rng.next_u64() >> 48) as i64).sum::<i64>() - 131_070 + shift)
            .collect();
        scale = 1 << 15;
    } else {
        ints = spec["ints"].as_array().unwrap().iter().map(int).collect();
        scale = int(&spec["scale"]);
    }
    assert!(
        scale > 0 && scale & (scale - 1) == 0,
        "the scale {scale} is a power of two"
    );
    ints.iter()
        .map(|&i| {
            assert!(i.abs() < 1 << 24, "{i} is exact in f32");
            i as f32 / scale as f32
        })
        .collect()
}

fn dim(case: &Value) -> usize {
    usize::try_from(int(&case["dim"])).unwrap()
}

#[test]
fn mmd_matches_alibi_transcription() {
    let doc = common::fixture("drift_embedding.json");
    let mut c = Checker::default();
    let list = cases(&doc, "mmd");
    assert!(list.len() >= 14, "{} MMD cases", list.len());
    let (mut numpy_order_agrees, mut same_bits) = (0, 0);
    for case in list {
        let n = name(case);
        let d = dim(case);
        let (x, y) = (sample(&case["reference"], d), sample(&case["current"], d));
        let perms = usize::try_from(int(&case["n_permutations"])).unwrap();
        let seed = case["seed"].as_u64().expect("a u64 seed");
        let start = Instant::now();
        let got = embedding::mmd_test(&x, &y, d, perms, seed);
        let took = start.elapsed();
        if x.len() / d >= 500 {
            println!(
                "mmd_test {} vs {} rows x {d} dims, {perms} permutations: {:.1} ms",
                x.len() / d,
                y.len() / d,
                took.as_secs_f64() * 1e3
            );
        }
        let terms = num(&case["mmd2_terms"]);
        c.close_to(
            "mmd2 (of the terms)",
            n,
            got.mmd2,
            num(&case["mmd2"]),
            terms,
        );
        c.close(
            "mmd2 vs the crate's order",
            n,
            got.mmd2,
            num(&case["mmd2_exact_order"]),
        );
        c.close("sigma", n, got.sigma, num(&case["sigma"]));
        c.close(
            "sigma vs the crate's order",
            n,
            got.sigma,
            num(&case["sigma_exact_order"]),
        );
        let count = int(&case["pvalue_count"]);
        c.equal("pvalue", n, got.pvalue, count as f64 / perms as f64);
        for (what, value) in [("mmd2", got.mmd2), ("sigma", got.sigma)] {
            let want = u64::from_str_radix(
                case[format!("{what}_exact_order_bits")].as_str().unwrap(),
                16,
            )
            .expect("16 hex digits");
            if value.to_bits() == want {
                same_bits += 1;
            } else {
                println!(
                    "  {n}: {what} {value:e} is not bit for bit {:e}",
                    f64::from_bits(want)
                );
            }
        }
        if got.pvalue == num(&case["pvalue_numpy_order"]) {
            numpy_order_agrees += 1;
        } else {
            println!(
                "  {n}: p-value {} here, {} with NumPy's summation order (a tie up to rounding)",
                got.pvalue, case["pvalue_numpy_order"]
            );
        }
        let again = embedding::mmd_test(&x, &y, d, perms, seed);
        c.equal("reproducible", n, again, got);
    }
    println!(
        "p-value equal to the NumPy-order transcription's in {numpy_order_agrees} of {} cases",
        list.len()
    );
    println!(
        "mmd2 and sigma bit for bit those of the transcription in the crate's order: {same_bits} of {}",
        2 * list.len()
    );
    c.finish("mmd", 6 * 14);
}

#[test]
fn mean_distance_matches_evidently() {
    let doc = common::fixture("drift_embedding.json");
    assert!(
        doc["evidently"].is_object(),
        "the fixture was written without Evidently"
    );
    let by_name: BTreeMap<&str, &Value> = cases(&doc, "mmd").iter().map(|c| (name(c), c)).collect();
    let mut c = Checker::default();
    let list = cases(&doc, "mean_distance");
    assert!(list.len() >= 18, "{} mean distance cases", list.len());
    for case in list {
        let n = name(case);
        let d = dim(case);
        let spec = if case.get("reference").is_some() {
            case
        } else {
            by_name[n]
        };
        let (x, y) = (sample(&spec["reference"], d), sample(&spec["current"], d));
        let got = embedding::mean_distance(&x, &y, d);
        let want = num(&case["score"]);
        if want == 0.0 {
            c.equal("score (exact 0)", n, got, 0.0);
        } else {
            c.close("score", n, got, want);
        }
        c.close("score vs numpy", n, got, num(&case["score_numpy"]));
        let drifted = case["drifted"].as_bool().unwrap();
        c.equal("drifted", n, embedding::mean_distance_drifted(got), drifted);
    }
    c.finish("mean_distance", 3 * 18);
}
