//! Search requests and results, and the planner's exact (brute-force) scan.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::distance::IndexDistance;
use crate::filter::Filter;
use crate::point::PointId;

pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 10_000;

/// `POST /api/collections/{c}/search`: a `vector` or a `text`, and how to search.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Embedded with the collection's `embedding_model`.
    #[serde(default)]
    pub text: Option<String>,
    /// How many results (`limit` is accepted too).
    #[serde(default = "default_k", alias = "limit")]
    pub k: usize,
    /// Search breadth; defaults to the collection's `ef`, never below `k`.
    #[serde(default)]
    pub ef: Option<usize>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default = "yes")]
    pub with_payload: bool,
    #[serde(default)]
    pub with_vector: bool,
    /// Cosine / dot: keep scores `>=` it; l2: keep distances `<=` it.
    #[serde(default)]
    pub score_threshold: Option<f32>,
    /// Brute force over every point instead of the graph.
    #[serde(default)]
    pub exact: bool,
}

fn default_k() -> usize {
    DEFAULT_K
}

fn yes() -> bool {
    true
}

impl SearchRequest {
    pub fn vector(vector: Vec<f32>, k: usize) -> SearchRequest {
        SearchRequest {
            vector: Some(vector),
            text: None,
            k,
            ef: None,
            filter: None,
            with_payload: true,
            with_vector: false,
            score_threshold: None,
            exact: false,
        }
    }
}

/// One result: cosine similarity / dot product (higher is closer) or Euclidean distance (l2,
/// lower is closer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

/// `(distance, slot)` ordered by distance, then slot, for a max-heap of the k best.
#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, usize);

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The k smallest distances seen.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The distance a candidate must beat (infinite until k are held).
    #[inline]
    pub fn bound(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |c| c.0)
        }
    }

    #[inline]
    pub fn push(&mut self, dist: f32, slot: usize) {
        if self.heap.len() < self.k {
            self.heap.push(Cand(dist, slot));
        } else if dist < self.bound() {
            self.heap.pop();
            self.heap.push(Cand(dist, slot));
        }
    }

    /// Offers every slot in `slots` that `pass` accepts, at its distance to `q`: the exact
    /// (brute-force) scan. `vectors` holds `dim` floats per slot.
    pub fn scan(
        &mut self,
        dist: &IndexDistance,
        q: &[f32],
        vectors: &[f32],
        dim: usize,
        slots: Range<usize>,
        pass: impl Fn(usize) -> bool,
    ) {
        for s in slots {
            if pass(s) {
                let d = dist.distance(q, &vectors[s * dim..(s + 1) * dim]);
                if d < self.bound() {
                    self.push(d, s);
                }
            }
        }
    }

    /// `(slot, distance)`, closest first.
    pub fn into_sorted(self) -> Vec<(usize, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| (c.1, c.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_the_smallest() {
        let mut t = TopK::new(3);
        for (i, d) in [5.0, 1.0, 4.0, 0.5, 9.0, 2.0].into_iter().enumerate() {
            t.push(d, i);
        }
        assert_eq!(t.into_sorted(), vec![(3, 0.5), (1, 1.0), (5, 2.0)]);
    }

    #[test]
    fn request_defaults_and_aliases() {
        let r: SearchRequest = serde_json::from_str(r#"{"vector": [1, 2], "limit": 3}"#).unwrap();
        assert_eq!(
            (r.k, r.with_payload, r.with_vector, r.exact),
            (3, true, false, false)
        );
        assert!(serde_json::from_str::<SearchRequest>(r#"{"vectr": [1]}"#).is_err());
    }
}
