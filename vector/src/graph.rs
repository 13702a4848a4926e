//! The graph searches walk: a frozen, refined, renumbered flat copy of hnsw_rs's HNSW graph.
//!
//! hnsw_rs builds the graph well enough but searches it slowly (every visited node goes through
//! a hash map, `Arc` clones and a heap allocation; neighbour lists sit behind `Arc`'d
//! `RwLock`s), and it leaves two flaws in the graph: it applies HNSW's neighbour-selection
//! heuristic only to a new point's own links, and when a reverse link overflows an older
//! point's list it keeps the closest `2 m` — so over a build the old lists drift towards plain
//! nearest-neighbour lists, which on clustered data need a much wider `ef` for the same recall.
//! [`Graph::build`] therefore
//!
//! 1. copies hnsw_rs's links and vectors into flat arrays (with inserts held off),
//! 2. re-selects every node's links on every layer with the heuristic (Malkov & Yashunin,
//!    algorithm 4) over its out- *and* in-links — what hnswlib does on overflow, after the
//!    fact — and tops layer-0 lists up to `1.25 m` with the closest links it pruned, as
//!    hnswlib's lists keep reverse links while they have room (all cores),
//! 3. renumbers the nodes in breadth-first order from the entry point and lays the vectors out
//!    in that order, so a node's neighbours sit near each other in memory (fewer cache and TLB
//!    misses: ~1.4× the queries per second of slot order on 100k × 128 here).
//!
//! [`Graph::search`] walks it the way hnswlib does: a greedy descent through the upper layers,
//! then a beam search of width `ef` on layer 0 with a generation-stamped visited array,
//! integer-keyed heaps (distances are never negative, so their bit patterns order like the
//! floats), and each expanded node's unvisited neighbours' vectors prefetched together before
//! their distances are computed.
//!
//! A graph is never modified: points inserted after it was built are found by an exact scan in
//! [`crate::index::Index`] until the next freeze.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use hnsw_rs::prelude::{Hnsw, Neighbour};

use crate::distance::IndexDistance;

/// Marks "no upper-layer links" in [`Graph::upper_at`].
const NONE: u32 = u32::MAX;
/// The most links a layer-0 list holds (`2 m`, and `m` is validated against `MAX_M`).
const MAX_LINKS: usize = 2 * crate::config::MAX_M;

pub struct Graph {
    /// Nodes `0..len`; node `i` is the collection's slot `slot_of[i]`, and the slots are
    /// exactly `0..len`.
    len: usize,
    dim: usize,
    /// Links per node on layer 0 (hnsw_rs keeps `2 m` there) and on the upper layers (`m`).
    m0: usize,
    m: usize,
    /// Layer 0: `1 + m0` words per node: the link count, then the links.
    level0: Box<[u32]>,
    /// Per node: where its upper layers start in `upper`, or [`NONE`].
    upper_at: Box<[u32]>,
    /// For each node above layer 0, its layers `1..=level`, `1 + m` words each.
    upper: Box<[u32]>,
    /// Per node: its top layer.
    levels: Box<[u8]>,
    /// Per node, `dim` floats.
    vectors: Box<[f32]>,
    slot_of: Box<[u32]>,
    entry: u32,
    top: usize,
}

/// A `(distance, node)` pair packed so that integer order is distance order, then node order.
#[inline(always)]
fn key(d: f32, node: u32) -> u64 {
    // Distances are in [0, inf) (see `IndexDistance`), where the IEEE bit pattern is monotone;
    // the mask turns a -0.0 into 0.0.
    (u64::from(d.to_bits() & 0x7fff_ffff) << 32) | u64::from(node)
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
    /// Starts a search over `n` nodes: a fresh stamp, so every node reads as unvisited.
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

    /// Marks `node` visited; false if it already was.
    #[inline(always)]
    fn visit(&mut self, node: usize) -> bool {
        let m = &mut self.marks[node];
        if *m == self.stamp {
            false
        } else {
            *m = self.stamp;
            true
        }
    }
}

/// Idle scratch spaces. A pool rather than one per thread: searches run on tokio's blocking
/// threads, which come and go by the hundred, and each space holds 2 bytes per point of the
/// largest graph it searched.
static SCRATCH: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());
/// Idle spaces kept beyond this are freed.
const SCRATCH_KEPT: usize = 32;

impl Scratch {
    fn take() -> Scratch {
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(self) {
        let mut pool = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < SCRATCH_KEPT {
            pool.push(self);
        }
    }
}

/// The heuristic: from `cands` (sorted closest first), keep a candidate only if it is closer
/// to the node than to every candidate kept before it, up to `cap`; then, up to `fill` links
/// in all, add back the closest candidates it pruned.
///
/// The heuristic alone over a node's whole neighbourhood keeps ~`0.85 m` links here, fewer
/// than hnswlib ends up with (it appends reverse links to lists with room without pruning):
/// filling to `1.25 m` gave the best recall per query-second on both benchmark sets.
fn select(
    g: &Graph,
    cands: &[(f32, u32)],
    cap: usize,
    fill: usize,
    dist: &IndexDistance,
    chosen: &mut Vec<(f32, u32)>,
) {
    chosen.clear();
    for &(d, c) in cands {
        if chosen.len() == cap {
            break;
        }
        let vc = g.vec(c as usize);
        if chosen
            .iter()
            .all(|&(_, s)| dist.distance(vc, g.vec(s as usize)) >= d)
        {
            chosen.push((d, c));
        }
    }
    let kept = chosen.len();
    for &(d, c) in cands {
        if chosen.len() >= fill.min(cap) {
            break;
        }
        if !chosen[..kept].iter().any(|&(_, s)| s == c) {
            chosen.push((d, c));
        }
    }
}

impl Graph {
    /// Copies hnsw_rs's graph (call it with no insert running: the copy is of one moment),
    /// refines it on `threads` threads and renumbers it (see the module docs).
    pub fn build(
        hnsw: &Hnsw<'static, f32, IndexDistance>,
        m: usize,
        dim: usize,
        dist: &IndexDistance,
        threads: usize,
    ) -> Graph {
        Graph::copy(hnsw, m, dim).finish(dist, threads)
    }

    /// Steps 2 and 3 of [`Graph::build`], which need hnsw_rs no more: inserts may go on.
    pub fn finish(mut self, dist: &IndexDistance, threads: usize) -> Graph {
        self.refine(dist, threads);
        self.renumber()
    }

    /// Step 1 of [`Graph::build`]: the copy, in slot numbering (node `i` = slot `i`).
    pub fn copy(hnsw: &Hnsw<'static, f32, IndexDistance>, m: usize, dim: usize) -> Graph {
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
        // Nodes and links are u32 (half the memory of usize); `NONE` is reserved. The caller
        // runs this under `catch_unwind`, so a collection this large gets an error, not a
        // wrong graph.
        assert!(
            len < NONE as usize,
            "a graph holds fewer than 2^32 - 1 points"
        );
        let mut level0 = vec![0u32; len * (1 + m0)].into_boxed_slice();
        let mut upper_at = vec![NONE; len].into_boxed_slice();
        let mut upper = Vec::new();
        let mut levels = vec![0u8; len].into_boxed_slice();
        let mut vectors = vec![0f32; len * dim].into_boxed_slice();
        // The entry point: a node of the highest layer.
        let mut entry: Option<(u32, usize)> = None;
        for p in &points {
            let slot = p.get_origin_id();
            let level = usize::from(p.get_point_id().0);
            let layers = p.get_neighborhood_id();
            levels[slot] = level as u8;
            let v = p.get_v();
            if v.len() == dim {
                vectors[slot * dim..(slot + 1) * dim].copy_from_slice(v);
            }
            write_row(
                &mut level0[slot * (1 + m0)..(slot + 1) * (1 + m0)],
                ids(&layers[0]),
            );
            if level > 0 {
                upper_at[slot] = upper.len() as u32;
                let start = upper.len();
                upper.resize(start + level * (1 + m), 0);
                let rows = upper[start..].chunks_exact_mut(1 + m);
                for (row, links) in rows.zip(&layers[1..=level]) {
                    write_row(row, ids(links));
                }
            }
            if entry.is_none_or(|(_, top)| level > top) {
                entry = Some((slot as u32, level));
            }
        }
        let (entry, top) = entry.unwrap_or((0, 0));
        Graph {
            len,
            dim,
            m0,
            m,
            level0,
            upper_at,
            upper: upper.into_boxed_slice(),
            levels,
            vectors,
            slot_of: (0..len as u32).collect(),
            entry,
            top,
        }
    }

    /// Re-selects every node's links, on every layer, with the heuristic over its out- and
    /// in-links (see [`select`]). Layer 0 on `threads` threads; the upper layers (few nodes)
    /// on this one.
    fn refine(&mut self, dist: &IndexDistance, threads: usize) {
        self.refine_level0(dist, threads);
        self.refine_upper(dist);
    }

    fn refine_level0(&mut self, dist: &IndexDistance, threads: usize) {
        let n = self.len;
        let keep = self.m0 * 5 / 8;
        let stride = 1 + self.m0;
        let (start, incoming) = in_links(n, 0..n, |u| self.links0(u));
        let mut level0 = vec![0u32; n * stride].into_boxed_slice();
        let per = n.div_ceil(threads.max(1)).max(1);
        let this = &*self;
        std::thread::scope(|scope| {
            for (t, rows) in level0.chunks_mut(per * stride).enumerate() {
                let (start, incoming) = (&start, &incoming);
                scope.spawn(move || {
                    let (mut cands, mut chosen) = (Vec::new(), Vec::new());
                    for (i, row) in rows.chunks_exact_mut(stride).enumerate() {
                        let u = t * per + i;
                        let ins = &incoming[start[u] as usize..start[u + 1] as usize];
                        this.candidates(u, this.links0(u).iter().chain(ins), dist, &mut cands);
                        select(this, &cands, this.m0, keep, dist, &mut chosen);
                        write_row(row, chosen.iter().map(|&(_, c)| c));
                    }
                });
            }
        });
        self.level0 = level0;
    }

    fn refine_upper(&mut self, dist: &IndexDistance) {
        let n = self.len;
        for level in 1..=self.top {
            let nodes: Vec<usize> = (0..n)
                .filter(|&u| usize::from(self.levels[u]) >= level)
                .collect();
            let (start, incoming) = in_links(n, nodes.iter().copied(), |u| self.links_up(u, level));
            let (mut cands, mut chosen) = (Vec::new(), Vec::new());
            let mut rows = Vec::with_capacity(nodes.len());
            for &u in &nodes {
                let ins = &incoming[start[u] as usize..start[u + 1] as usize];
                self.candidates(
                    u,
                    self.links_up(u, level).iter().chain(ins),
                    dist,
                    &mut cands,
                );
                select(self, &cands, self.m, 0, dist, &mut chosen);
                rows.push(chosen.iter().map(|&(_, c)| c).collect::<Vec<_>>());
            }
            for (&u, chosen) in nodes.iter().zip(&rows) {
                let at = self.upper_at[u] as usize + (level - 1) * (1 + self.m);
                write_row(&mut self.upper[at..at + 1 + self.m], chosen.iter().copied());
            }
        }
    }

    /// `(distance to u, c)` for the distinct `c != u` among `links`, closest first.
    fn candidates<'a>(
        &self,
        u: usize,
        links: impl Iterator<Item = &'a u32>,
        dist: &IndexDistance,
        out: &mut Vec<(f32, u32)>,
    ) {
        out.clear();
        let vu = self.vec(u);
        out.extend(
            links
                .filter(|&&c| c as usize != u)
                .map(|&c| (dist.distance(vu, self.vec(c as usize)), c)),
        );
        out.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.dedup_by_key(|c| c.1);
    }

    /// Renumbers the nodes breadth-first from the entry point (then from any node not reached)
    /// over layer 0, moving links, levels and vectors to the new numbers.
    fn renumber(self) -> Graph {
        let n = self.len;
        let mut new_of = vec![u32::MAX; n];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut head = 0;
        for root in std::iter::once(self.entry as usize).chain(0..n) {
            if n == 0 || new_of[root] != u32::MAX {
                continue;
            }
            new_of[root] = order.len() as u32;
            order.push(root as u32);
            while head < order.len() {
                let u = order[head] as usize;
                head += 1;
                for &v in self.links0(u) {
                    if new_of[v as usize] == u32::MAX {
                        new_of[v as usize] = order.len() as u32;
                        order.push(v);
                    }
                }
            }
        }
        let (stride, dim) = (1 + self.m0, self.dim);
        let mut level0 = vec![0u32; n * stride].into_boxed_slice();
        let mut upper_at = vec![NONE; n].into_boxed_slice();
        let mut levels = vec![0u8; n].into_boxed_slice();
        let mut vectors = vec![0f32; n * dim].into_boxed_slice();
        let mut slot_of = vec![0u32; n].into_boxed_slice();
        for (new, &old) in order.iter().enumerate() {
            let old = old as usize;
            write_row(
                &mut level0[new * stride..(new + 1) * stride],
                self.links0(old).iter().map(|&l| new_of[l as usize]),
            );
            upper_at[new] = self.upper_at[old];
            levels[new] = self.levels[old];
            vectors[new * dim..(new + 1) * dim].copy_from_slice(self.vec(old));
            slot_of[new] = self.slot_of[old];
        }
        let mut upper = self.upper;
        for row in upper.chunks_exact_mut(1 + self.m) {
            let count = row[0] as usize;
            for l in &mut row[1..=count] {
                *l = new_of[*l as usize];
            }
        }
        Graph {
            len: n,
            dim,
            m0: self.m0,
            m: self.m,
            level0,
            upper_at,
            upper,
            levels,
            vectors,
            slot_of,
            entry: new_of.get(self.entry as usize).copied().unwrap_or(0),
            top: self.top,
        }
    }

    /// Slots `0..len()` are in the graph.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held: links, the vectors' copy, the slot map.
    pub fn memory_bytes(&self) -> usize {
        4 * (self.level0.len()
            + self.upper_at.len()
            + self.upper.len()
            + self.vectors.len()
            + self.slot_of.len())
            + self.levels.len()
    }

    /// Mean number of layer-0 links per node.
    pub fn mean_degree(&self) -> f64 {
        let links: usize = (0..self.len).map(|u| self.links0(u).len()).sum();
        links as f64 / self.len.max(1) as f64
    }

    #[inline(always)]
    fn vec(&self, node: usize) -> &[f32] {
        &self.vectors[node * self.dim..(node + 1) * self.dim]
    }

    #[inline(always)]
    fn links0(&self, node: usize) -> &[u32] {
        let row = &self.level0[node * (1 + self.m0)..(node + 1) * (1 + self.m0)];
        &row[1..=row[0] as usize]
    }

    #[inline(always)]
    fn links_up(&self, node: usize, level: usize) -> &[u32] {
        let at = self.upper_at[node];
        if at == NONE {
            return &[];
        }
        let start = at as usize + (level - 1) * (1 + self.m);
        let row = &self.upper[start..start + 1 + self.m];
        &row[1..=row[0] as usize]
    }

    /// The up to `ef` closest slots to `q` that `accept` passes (all when `None`), as
    /// `(slot, distance)`, closest first.
    pub fn search(
        &self,
        dist: &IndexDistance,
        q: &[f32],
        ef: usize,
        accept: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        if self.len == 0 || ef == 0 {
            return Vec::new();
        }
        let d = |node: usize| dist.distance(q, self.vec(node));

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

        let mut scratch = Scratch::take();
        let out = {
            let s = &mut scratch;
            s.begin(self.len);
            let filtered = accept.is_some();
            let ok = |node: usize| accept.is_none_or(|f| f(self.slot_of[node] as usize));
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
                        prefetch(self.vec(n as usize));
                    }
                }
                for &n in &fresh[..nf] {
                    let dn = d(n as usize);
                    if s.results.len() < ef || dn < bound {
                        s.candidates.push(Reverse(key(dn, n)));
                        if ok(n as usize) {
                            s.results.push(key(dn, n));
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
                    let (d, node) = unkey(k);
                    (self.slot_of[node as usize] as usize, d)
                })
                .collect();
            out.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out
        };
        scratch.give_back();
        out
    }
}

/// Writes a link row: the count, then as many of `links` as the row holds.
fn write_row(row: &mut [u32], links: impl IntoIterator<Item = u32>) {
    let mut n = 0;
    for (dst, l) in row[1..].iter_mut().zip(links) {
        *dst = l;
        n += 1;
    }
    row[0] = n;
}

/// hnsw_rs's neighbours as our slot numbers (its data ids are our slots).
fn ids(links: &[Neighbour]) -> impl Iterator<Item = u32> + '_ {
    links.iter().map(|l| l.d_id as u32)
}

/// Who links to whom: for `nodes` and their links on one layer, a compressed sparse row over
/// node numbers `0..n`: the in-links of `v` are `incoming[start[v]..start[v + 1]]`.
fn in_links<'a>(
    n: usize,
    nodes: impl Iterator<Item = usize> + Clone,
    links: impl Fn(usize) -> &'a [u32],
) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n + 1];
    for u in nodes.clone() {
        for &v in links(u) {
            start[v as usize + 1] += 1;
        }
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut incoming = vec![0u32; start[n] as usize];
    for u in nodes {
        for &v in links(u) {
            incoming[fill[v as usize] as usize] = u as u32;
            fill[v as usize] += 1;
        }
    }
    (start, incoming)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Metric;

    #[test]
    fn renumbering_keeps_slots_vectors_and_links_together() {
        const DIM: usize = 8;
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let data: Vec<f32> = (0..600 * DIM)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        let dist = IndexDistance::new(Metric::L2);
        let hnsw = Hnsw::new(8, 600, 16, 64, dist);
        let items: Vec<(&[f32], usize)> = data.chunks_exact(DIM).zip(0..).collect();
        hnsw.parallel_insert_slice(&items);
        let g = Graph::build(&hnsw, 8, DIM, &dist, 2);

        assert_eq!(g.len(), 600);
        let mut slots: Vec<u32> = g.slot_of.to_vec();
        slots.sort_unstable();
        assert!(
            slots.iter().copied().eq(0..600),
            "a permutation of the slots"
        );
        for node in 0..600 {
            let slot = g.slot_of[node] as usize;
            assert_eq!(g.vec(node), &data[slot * DIM..(slot + 1) * DIM]);
            assert!(
                g.links0(node)
                    .iter()
                    .all(|&l| (l as usize) < 600 && l as usize != node)
            );
            assert!(g.links0(node).len() <= 16);
        }
        assert_eq!(g.entry, 0, "breadth-first from the entry point");
        assert_eq!(usize::from(g.levels[0]), g.top);
        // Every point finds itself first, under its slot number.
        for slot in (0..600).step_by(7) {
            let q = &data[slot * DIM..(slot + 1) * DIM];
            assert_eq!(g.search(&dist, q, 16, None)[0], (slot, 0.0));
        }
        // Filters see slots, not node numbers.
        let odd = |s: usize| s % 2 == 1;
        let hits = g.search(&dist, &data[..DIM], 16, Some(&odd));
        assert_eq!(hits.len(), 16);
        assert!(hits.iter().all(|&(s, _)| s % 2 == 1));
    }
}
