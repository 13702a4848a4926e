//! A frozen, flat copy of the HNSW graph, and the search over it.
//!
//! hnsw_rs builds the graph well enough but searches it slowly: every visited node goes through
//! a hash map, `Arc` clones and a heap allocation, and neighbour lists sit behind `Arc`'d
//! `RwLock`s. So after each build [`Graph::freeze`] copies the links into two flat `u32`
//! arrays, and [`Graph::search`] walks them the way hnswlib does: a greedy descent through the
//! upper layers, then a beam search of width `ef` on layer 0 with a generation-stamped visited
//! array, integer-keyed heaps (distances are never negative, so their bit patterns order like
//! the floats) and the next neighbour's vector prefetched while the current one is measured.
//! Vectors are read from the collection's own slot store, so the graph holds links only.
//!
//! The graph is never modified: points inserted after it was frozen are found by an exact scan
//! in [`crate::index::Index`] until the next freeze.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hnsw_rs::prelude::Hnsw;

use crate::distance::IndexDistance;

/// Marks "no upper-layer links" in [`Graph::upper_at`].
const NONE: u32 = u32::MAX;
/// The most links a layer-0 list holds (`2 m`, and `m` is validated against `MAX_M`).
const MAX_LINKS: usize = 2 * crate::config::MAX_M;

pub struct Graph {
    /// Slots `0..len` are in the graph.
    len: usize,
    /// Links per node on layer 0 (hnsw_rs keeps `2 m` there) and on the upper layers (`m`).
    m0: usize,
    m: usize,
    /// Layer 0: `1 + m0` words per slot: the link count, then the links.
    level0: Box<[u32]>,
    /// Per slot: where its upper layers start in `upper`, or [`NONE`].
    upper_at: Box<[u32]>,
    /// For each node above layer 0, its layers `1..=level`, `1 + m` words each.
    upper: Box<[u32]>,
    entry: u32,
    top: usize,
}

/// A `(distance, slot)` pair packed so that integer order is distance order, then slot order.
#[inline(always)]
fn key(d: f32, slot: u32) -> u64 {
    // Distances are in [0, inf) (see `IndexDistance`), where the IEEE bit pattern is monotone;
    // the mask turns a -0.0 into 0.0.
    (u64::from(d.to_bits() & 0x7fff_ffff) << 32) | u64::from(slot)
}

#[inline(always)]
fn unkey(k: u64) -> (f32, u32) {
    (f32::from_bits((k >> 32) as u32), k as u32)
}

/// Asks for `v`'s cache lines (up to 2 KiB) ahead of the distance computation that reads it.
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address, and every address
    // here is inside `v`.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        for line in 0..(v.len() * 4).div_ceil(64).min(32) {
            _mm_prefetch::<_MM_HINT_T0>(p.add(64 * line));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Per-thread scratch space: the visited marks and the two heaps, reused across searches.
#[derive(Default)]
struct Scratch {
    marks: Vec<u16>,
    stamp: u16,
    candidates: BinaryHeap<Reverse<u64>>,
    results: BinaryHeap<u64>,
}

impl Scratch {
    /// Starts a search over `n` slots: a fresh stamp, so every slot reads as unvisited.
    fn begin(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `slot` visited; false if it already was.
    #[inline(always)]
    fn visit(&mut self, slot: usize) -> bool {
        let m = &mut self.marks[slot];
        if *m == self.stamp {
            false
        } else {
            *m = self.stamp;
            true
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Graph {
    /// Copies hnsw_rs's graph, and its vectors (slot order, `dim` floats each) for
    /// [`Graph::refine`]. Call it with no insert running: the copy is of one moment.
    pub fn copy(
        hnsw: &Hnsw<'static, f32, IndexDistance>,
        m: usize,
        dim: usize,
    ) -> (Graph, Vec<f32>) {
        let m0 = (2 * m).min(MAX_LINKS);
        // (hnsw_rs's point iterator panics on an empty graph.)
        let points: Vec<_> = if hnsw.get_nb_point() == 0 {
            Vec::new()
        } else {
            hnsw.get_point_indexation().into_iter().collect()
        };
        let len = points
            .iter()
            .map(|p| p.get_origin_id() + 1)
            .max()
            .unwrap_or(0);
        let mut level0 = vec![0u32; len * (1 + m0)].into_boxed_slice();
        let mut upper_at = vec![NONE; len].into_boxed_slice();
        let mut upper = Vec::new();
        let mut vectors = vec![0f32; len * dim];
        // The entry point: a node of the highest layer.
        let mut entry: Option<(u32, usize)> = None;
        let copy = |dst: &mut [u32], links: &[hnsw_rs::prelude::Neighbour], cap: usize| {
            let n = links.len().min(cap);
            dst[0] = n as u32;
            for (d, l) in dst[1..=n].iter_mut().zip(links) {
                *d = l.d_id as u32;
            }
        };
        for p in &points {
            let slot = p.get_origin_id();
            let level = usize::from(p.get_point_id().0);
            let layers = p.get_neighborhood_id();
            let v = p.get_v();
            if v.len() == dim {
                vectors[slot * dim..(slot + 1) * dim].copy_from_slice(v);
            }
            copy(
                &mut level0[slot * (1 + m0)..(slot + 1) * (1 + m0)],
                &layers[0],
                m0,
            );
            if level > 0 {
                upper_at[slot] = upper.len() as u32;
                let start = upper.len();
                upper.resize(start + level * (1 + m), 0);
                let rows = upper[start..].chunks_exact_mut(1 + m);
                for (row, links) in rows.zip(&layers[1..=level]) {
                    copy(row, links, m);
                }
            }
            if entry.is_none_or(|(_, top)| level > top) {
                entry = Some((slot as u32, level));
            }
        }
        let (entry, top) = entry.unwrap_or((0, 0));
        let graph = Graph {
            len,
            m0,
            m,
            level0,
            upper_at,
            upper: upper.into_boxed_slice(),
            entry,
            top,
        };
        (graph, vectors)
    }

    /// Re-selects every node's layer-0 links with HNSW's diversity heuristic (Malkov &
    /// Yashunin, algorithm 4) over its out- and in-links.
    ///
    /// hnsw_rs applies the heuristic only to a new point's own links; when a reverse link
    /// overflows an older point's list, it keeps the closest `2 m`. Over a build the old lists
    /// drift towards plain nearest-neighbour lists, which cluster: on clustered data the walk
    /// then needs a much wider `ef` for the same recall. hnswlib re-applies the heuristic on
    /// overflow; this pass does the same after the fact, with every point that links to a node
    /// as a candidate for its list. Runs on `threads` threads.
    pub fn refine(&mut self, vectors: &[f32], dim: usize, dist: &IndexDistance, threads: usize) {
        let n = self.len;
        let stride = 1 + self.m0;
        // In-links, as a compressed sparse row.
        let mut start = vec![0u32; n + 1];
        for u in 0..n {
            for &v in self.links0(u) {
                start[v as usize + 1] += 1;
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut incoming = vec![0u32; start[n] as usize];
        for u in 0..n {
            for &v in self.links0(u) {
                incoming[fill[v as usize] as usize] = u as u32;
                fill[v as usize] += 1;
            }
        }
        drop(fill);
        let vec = |s: usize| &vectors[s * dim..(s + 1) * dim];
        let mut level0 = vec![0u32; n * stride].into_boxed_slice();
        let per = n.div_ceil(threads.max(1)).max(1);
        let this = &*self;
        std::thread::scope(|scope| {
            for (t, rows) in level0.chunks_mut(per * stride).enumerate() {
                let (start, incoming) = (&start, &incoming);
                scope.spawn(move || {
                    let mut cands: Vec<(f32, u32)> = Vec::new();
                    let mut chosen: Vec<(f32, u32)> = Vec::new();
                    for (i, row) in rows.chunks_exact_mut(stride).enumerate() {
                        let u = t * per + i;
                        cands.clear();
                        let ins = &incoming[start[u] as usize..start[u + 1] as usize];
                        for &c in this.links0(u).iter().chain(ins) {
                            if c as usize != u {
                                cands.push((dist.distance(vec(u), vec(c as usize)), c));
                            }
                        }
                        cands.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                        cands.dedup_by_key(|c| c.1);
                        chosen.clear();
                        for &(d, c) in &cands {
                            if chosen.len() == this.m0 {
                                break;
                            }
                            let vc = vec(c as usize);
                            if chosen
                                .iter()
                                .all(|&(_, s)| dist.distance(vc, vec(s as usize)) >= d)
                            {
                                chosen.push((d, c));
                            }
                        }
                        row[0] = chosen.len() as u32;
                        for (dst, &(_, c)) in row[1..].iter_mut().zip(&chosen) {
                            *dst = c;
                        }
                    }
                });
            }
        });
        self.level0 = level0;
    }

    /// Slots `0..len()` are in the graph.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Average layer-0 out-degree.
    pub fn mean_degree(&self) -> f64 {
        (0..self.len).map(|s| self.links0(s).len()).sum::<usize>() as f64 / self.len.max(1) as f64
    }

    /// Bytes held by the links.
    pub fn memory_bytes(&self) -> usize {
        4 * (self.level0.len() + self.upper_at.len() + self.upper.len())
    }

    #[inline(always)]
    fn links0(&self, slot: usize) -> &[u32] {
        let row = &self.level0[slot * (1 + self.m0)..(slot + 1) * (1 + self.m0)];
        &row[1..=row[0] as usize]
    }

    #[inline(always)]
    fn links_up(&self, slot: usize, level: usize) -> &[u32] {
        let at = self.upper_at[slot];
        if at == NONE {
            return &[];
        }
        let start = at as usize + (level - 1) * (1 + self.m);
        let row = &self.upper[start..start + 1 + self.m];
        &row[1..=row[0] as usize]
    }

    /// The up to `ef` closest slots to `q` that `accept` passes (all when `None`), as
    /// `(slot, distance)`, closest first. `vectors` is the slot store, `dim` floats per slot.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        dist: &IndexDistance,
        q: &[f32],
        ef: usize,
        accept: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        if self.len == 0 || ef == 0 {
            return Vec::new();
        }
        let vec = |s: usize| &vectors[s * dim..(s + 1) * dim];
        let d = |s: usize| dist.distance(q, vec(s));

        // Greedy descent: on each upper layer, move to the closest neighbour until none is
        // closer.
        let mut ep = self.entry as usize;
        let mut d_ep = d(ep);
        for level in (1..=self.top).rev() {
            loop {
                let mut moved = false;
                for &n in self.links_up(ep, level) {
                    let dn = d(n as usize);
                    if dn < d_ep {
                        (ep, d_ep) = (n as usize, dn);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.begin(self.len);
            let filtered = accept.is_some();
            let ok = |slot: usize| accept.is_none_or(|f| f(slot));
            s.visit(ep);
            let mut bound = f32::INFINITY;
            if ok(ep) {
                s.results.push(key(d_ep, ep as u32));
                bound = d_ep;
            }
            s.candidates.push(Reverse(key(d_ep, ep as u32)));
            while let Some(&Reverse(c)) = s.candidates.peek() {
                let (dc, cur) = unkey(c);
                // Stop once the closest candidate left is farther than the worst result, with
                // the result set full (a filtered search must fill it before stopping).
                if dc > bound && (s.results.len() >= ef || !filtered) {
                    break;
                }
                s.candidates.pop();
                // The unvisited neighbours first, their vectors prefetched all at once (the
                // loads overlap), then their distances.
                let mut fresh = [0u32; MAX_LINKS];
                let mut nf = 0;
                for &n in self.links0(cur as usize) {
                    if s.visit(n as usize) {
                        fresh[nf] = n;
                        nf += 1;
                        prefetch(vec(n as usize));
                    }
                }
                for &n in &fresh[..nf] {
                    let n = n as usize;
                    let dn = d(n);
                    if s.results.len() < ef || dn < bound {
                        s.candidates.push(Reverse(key(dn, n as u32)));
                        if ok(n) {
                            s.results.push(key(dn, n as u32));
                            if s.results.len() > ef {
                                s.results.pop();
                            }
                        }
                        if let Some(&worst) = s.results.peek() {
                            bound = unkey(worst).0;
                        }
                    }
                }
            }
            let mut out: Vec<(usize, f32)> = s
                .results
                .drain()
                .map(|k| {
                    let (d, slot) = unkey(k);
                    (slot as usize, d)
                })
                .collect();
            out.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out
        })
    }
}
