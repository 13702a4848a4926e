use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;

/// Every version of "m" and "other" is ready with the same signature, but "odd" differs and
/// "missing" does not exist.
struct FakeCatalog;

impl Catalog for FakeCatalog {
    fn resolve(&self, model: &str, version: &str) -> std::result::Result<(u64, String), String> {
        match (model, version) {
            ("missing", _) | (_, "99") => {
                Err(format!("model '{model}' has no version '{version}'"))
            }
            ("odd", _) => Ok((1, "in:x FP32 [-1,3]".into())),
            _ => Ok((version.parse().unwrap_or(7), "in:x FP32 [-1,4]".into())),
        }
    }
}

fn spec(json: &str) -> ExperimentSpec {
    ExperimentSpec::from_json(json.as_bytes()).unwrap()
}

fn exps(dir: Option<&Path>) -> Experiments {
    Experiments::open(
        Options {
            dir: dir.map(Path::to_path_buf),
            ..Options::default()
        },
        &prometheus::Registry::new(),
    )
    .unwrap()
}

const OK: Outcome = Outcome {
    latency: Duration::from_millis(2),
    error: false,
};

#[test]
fn split_is_exact_and_srm_stays_quiet_until_the_split_is_biased() {
    let e = exps(None);
    e.put(
        "ab",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":70},{"version":2,"weight":30}],"unit":{"header":"x-user-id"}}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.for_model("m").unwrap();
    let n = 20_000;
    let mut b = 0;
    for i in 0..n {
        let a = exp.assign(Some(&format!("user-{i}")));
        b += a.arm;
        exp.record(a, OK);
    }
    let sigma = (n as f64 * 0.3 * 0.7).sqrt();
    assert!((b as f64 - 0.3 * n as f64).abs() < 4.0 * sigma, "{b}");
    let r = exp.results();
    let srm = r.srm.unwrap();
    assert!(!srm.mismatch && r.trustworthy, "{srm:?}");

    // A biased assignment: 2% of arm 2's exposures lost (the data-loss kind of SRM).
    let e = exps(None);
    e.put(
        "biased",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":50},{"version":2,"weight":50}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("biased").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..n {
        let a = exp.assign(Some(&format!("u{i}")));
        if a.arm == 1 && rng.random::<f64>() < 0.08 {
            continue;
        }
        exp.record(a, OK);
    }
    let r = exp.results();
    assert!(
        r.srm.as_ref().unwrap().mismatch && !r.trustworthy,
        "{:?}",
        r.srm
    );
}

#[test]
fn units_keep_their_arm_and_weight_changes_move_only_what_they_must() {
    let e = exps(None);
    e.put(
        "w",
        spec(r#"{"model":"m","arms":[{"name":"a","version":1,"weight":50},{"name":"b","version":2,"weight":50}],"unit":{"parameter":"user_id"}}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("w").unwrap();
    let before: Vec<usize> = (0..10_000)
        .map(|i| exp.assign(Some(&i.to_string())).arm)
        .collect();
    let again: Vec<usize> = (0..10_000)
        .map(|i| exp.assign(Some(&i.to_string())).arm)
        .collect();
    assert_eq!(before, again);
    e.set_weights(
        "w",
        &BTreeMap::from([("a".to_string(), 60.0), ("b".to_string(), 40.0)]),
    )
    .unwrap();
    let after: Vec<usize> = (0..10_000)
        .map(|i| exp.assign(Some(&i.to_string())).arm)
        .collect();
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    let moved_to_a = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x != y && **y == 0)
        .count();
    assert_eq!(moved, moved_to_a, "only moves into the arm that grew");
    // 10% of the buckets move; 10,000 units see about 1,000 of them move (binomial, 6σ).
    assert!((820..=1180).contains(&moved), "{moved}");
}

#[test]
fn registry_checks() {
    let e = exps(None);
    let err = |j: &str| e.put("x", spec(j), &FakeCatalog).unwrap_err().to_string();
    assert!(
        err(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":99,"weight":1}]}"#)
            .contains("no version '99'")
    );
    assert!(err(r#"{"model":"m","arms":[{"version":1,"weight":1},{"model":"odd","version":1,"weight":1}]}"#).contains("different signature"));
    e.put(
        "one",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    let two = e.put(
        "two",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":3,"weight":1}]}"#),
        &FakeCatalog,
    );
    assert!(
        matches!(two, Err(Error::Conflict(_))),
        "one running experiment per model"
    );
    let changed = e.put(
        "one",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":3,"weight":1}]}"#),
        &FakeCatalog,
    );
    assert!(
        matches!(changed, Err(Error::Conflict(_))),
        "arms cannot change"
    );
    e.stop("one", "test").unwrap();
    assert!(e.for_model("m").is_none());
    e.put(
        "two",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":3,"weight":1}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    assert_eq!(e.for_model("m").unwrap().name, "two");
}

#[test]
fn error_guardrail_takes_the_arm_out() {
    let e = exps(None);
    e.put(
        "g",
        spec(r#"{"model":"m","arms":[{"name":"a","version":1,"weight":1},{"name":"b","version":2,"weight":1}],
                 "guardrails":[{"rule":"error_rate","max":0.1,"min_requests":50}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("g").unwrap();
    for _ in 0..2000 {
        let a = exp.assign(None);
        exp.record(
            a,
            Outcome {
                error: a.arm == 1,
                ..OK
            },
        );
    }
    let r = exp.results();
    assert!(r.arms[1].stopped_by_guardrail);
    assert_eq!(r.arms[1].weight, 0.0);
    // It tripped at its 50th request and got nothing after.
    assert_eq!(r.arms[1].exposures, 50);
    assert!(
        r.events
            .iter()
            .any(|ev| ev.kind == "guardrail" && ev.arm.as_deref() == Some("b"))
    );
    assert!((0..1000).all(|_| exp.assign(None).arm == 0));
}

#[test]
fn bandit_favours_the_better_arm_after_the_exposure_floor() {
    let e = exps(None);
    e.put(
        "bandit",
        spec(r#"{"model":"m","allocation":"thompson","arms":[{"version":1,"weight":1},{"version":2,"weight":1},{"version":3,"weight":1}],
                 "bandit":{"min_exposures":100,"floor":0.05,"update_every":20}}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("bandit").unwrap();
    let rates = [0.05, 0.30, 0.05];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut late = [0usize; 3];
    for i in 0..6000 {
        let a = exp.assign(None);
        exp.record(a, OK);
        let reward = f64::from(u8::from(rng.random::<f64>() < rates[a.arm]));
        exp.reward(a.arm, reward).unwrap();
        if i >= 4000 {
            late[a.arm] += 1;
        }
    }
    assert!(
        late[1] > 1600,
        "the best arm gets most of the late traffic: {late:?}"
    );
    assert!(
        late[0] > 0 && late[2] > 0,
        "the floor keeps the others learning: {late:?}"
    );
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let units: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    let (arms, results) = {
        let e = exps(Some(dir.path()));
        e.put(
            "p",
            spec(r#"{"model":"m","arms":[{"version":1,"weight":3},{"version":2,"weight":1}],"unit":{"header":"x-user-id"},"outcome":"continuous"}"#),
            &FakeCatalog,
        )
        .unwrap();
        let exp = e.get("p").unwrap();
        let arms: Vec<usize> = units.iter().map(|u| exp.assign(Some(u)).arm).collect();
        for (i, &a) in arms.iter().enumerate() {
            exp.record(Assignment { arm: a }, OK);
            exp.reward(a, i as f64 / 10.0).unwrap();
        }
        e.flush();
        (arms, serde_json::to_value(exp.results()).unwrap())
    };
    let e = exps(Some(dir.path()));
    let exp = e.for_model("m").expect("still running after the reopen");
    let again: Vec<usize> = units.iter().map(|u| exp.assign(Some(u)).arm).collect();
    assert_eq!(arms, again);
    assert_eq!(
        serde_json::to_value(exp.results()).unwrap()["arms"],
        results["arms"]
    );
}

#[test]
fn feedback_by_id_and_by_unit() {
    let e = exps(None);
    e.put(
        "f",
        spec(r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"unit":{"header":"x-user-id"}}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("f").unwrap();
    let a = exp.assign(Some("alice"));
    e.remember("req-1", &exp, a);
    let items: Vec<Feedback> = serde_json::from_str(
        r#"[{"id":"req-1","reward":1},{"id":"req-1","reward":1},{"experiment":"f","unit":"alice","reward":0},
            {"id":"nope","reward":1},{"experiment":"f","unit":"bob","reward":0.5},{"reward":1}]"#,
    )
    .unwrap();
    let report = e.feedback(&items).unwrap();
    assert_eq!(report.accepted, 2);
    let rejected: Vec<usize> = report.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, [1, 3, 4, 5], "{report:?}");
    assert!(report.rejected[2].reason.contains("0 or 1"));
    let r = exp.results();
    assert_eq!(r.arms[a.arm].outcome.n, 2);
    assert_eq!(r.arms[a.arm].outcome.successes, Some(1));
}

#[test]
fn reward_guardrail_stops_an_arm_that_is_significantly_worse() {
    let e = exps(None);
    e.put(
        "r",
        spec(r#"{"model":"m","outcome":"continuous","arms":[{"name":"a","version":1,"weight":1},{"name":"b","version":2,"weight":1}],
                 "guardrails":[{"rule":"reward_worse","min_samples":30}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("r").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut rewards = [0u64; 2];
    for _ in 0..4000 {
        let a = exp.assign(None);
        exp.record(a, OK);
        // b is one standard deviation worse.
        let r = rng.random::<f64>() - if a.arm == 1 { 0.29 } else { 0.0 };
        exp.reward(a.arm, r).unwrap();
        rewards[a.arm] += 1;
    }
    let res = exp.results();
    assert!(res.arms[1].stopped_by_guardrail, "{rewards:?}");
    let ev = res.events.iter().find(|ev| ev.kind == "guardrail").unwrap();
    assert_eq!(ev.rule.as_deref(), Some("reward_worse"));
    assert!(ev.value.unwrap() < 0.05);
    // Taken out early, long before it saw half the traffic.
    assert!(rewards[1] < 1000, "{rewards:?}");

    // The same with equal arms: nothing trips.
    let e = exps(None);
    e.put(
        "aa",
        spec(r#"{"model":"m","outcome":"continuous","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],
                 "guardrails":[{"rule":"reward_worse","min_samples":30}]}"#),
        &FakeCatalog,
    )
    .unwrap();
    let exp = e.get("aa").unwrap();
    for _ in 0..4000 {
        let a = exp.assign(None);
        exp.record(a, OK);
        exp.reward(a.arm, rng.random::<f64>()).unwrap();
    }
    assert!(exp.results().arms.iter().all(|a| !a.stopped_by_guardrail));
}
