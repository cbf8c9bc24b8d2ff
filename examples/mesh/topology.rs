//! Which nodes of the mesh simulator link to which: a full mesh, or a random connected
//! K-regular graph drawn from a seed.
//!
//! The random graph is drawn by pairing "stubs" (each node holds K of them) at random,
//! never pairing a node with itself or with a node it is already linked to; when no such
//! pair is left the draw starts over (Steger and Wormald's method, close to uniform over
//! K-regular graphs). A draw that is not connected starts over too. K = 2 is a ring
//! through a random order of the nodes, since random 2-regular graphs are seldom
//! connected. The generator is our own (splitmix64), so a seed names the same graph on
//! every machine and every version of the dependencies.

use std::collections::BTreeSet;

/// Draws after which a topology is declared impossible to find.
const ATTEMPTS: usize = 1000;
/// Random picks of two stubs before looking at every remaining pair.
const PICKS: usize = 64;

/// Nodes `0..nodes` and the edges between them, each once as `(a, b)` with `a < b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub nodes: usize,
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    /// Every node linked to every other.
    pub fn full(nodes: usize) -> Topology {
        let edges = (0..nodes)
            .flat_map(|a| (a + 1..nodes).map(move |b| (a, b)))
            .collect();
        Topology { nodes, edges }
    }

    /// Each node linked to `degree` others, connected: the full mesh when
    /// `degree = nodes - 1`, otherwise a graph drawn from `seed`.
    ///
    /// # Errors
    /// When no such graph exists (fewer than 2 nodes, `degree` 0 or at least `nodes`,
    /// `nodes * degree` odd, or degree 1 beyond 2 nodes), or none was found.
    pub fn regular(nodes: usize, degree: usize, seed: u64) -> Result<Topology, String> {
        if nodes < 2 {
            return Err(format!("a mesh needs at least 2 nodes, not {nodes}"));
        }
        if degree == 0 || degree >= nodes {
            return Err(format!(
                "the degree must be between 1 and nodes - 1 = {}, not {degree}",
                nodes - 1
            ));
        }
        if !(nodes * degree).is_multiple_of(2) {
            return Err(format!(
                "no {degree}-regular graph on {nodes} nodes: nodes * degree must be even"
            ));
        }
        if degree == nodes - 1 {
            return Ok(Topology::full(nodes));
        }
        if degree == 1 {
            return Err(format!(
                "a 1-regular graph on {nodes} nodes is never connected"
            ));
        }
        let mut rng = SplitMix64(seed);
        if degree == 2 {
            return Ok(ring(nodes, &mut rng));
        }
        for _ in 0..ATTEMPTS {
            if let Some(edges) = draw(nodes, degree, &mut rng) {
                let topology = Topology { nodes, edges };
                if topology.is_connected() {
                    return Ok(topology);
                }
            }
        }
        Err(format!(
            "no connected {degree}-regular graph on {nodes} nodes found in {ATTEMPTS} draws"
        ))
    }

    /// How many edges each node has.
    pub fn degrees(&self) -> Vec<usize> {
        let mut degrees = vec![0; self.nodes];
        for &(a, b) in &self.edges {
            degrees[a] += 1;
            degrees[b] += 1;
        }
        degrees
    }

    /// Whether every node can reach every other.
    pub fn is_connected(&self) -> bool {
        let mut neighbours = vec![Vec::new(); self.nodes];
        for &(a, b) in &self.edges {
            neighbours[a].push(b);
            neighbours[b].push(a);
        }
        let mut seen = vec![false; self.nodes];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(v) = stack.pop() {
            for &w in &neighbours[v] {
                if !seen[w] {
                    seen[w] = true;
                    stack.push(w);
                }
            }
        }
        seen.iter().all(|&s| s)
    }
}

/// A ring through the nodes in a random order.
fn ring(nodes: usize, rng: &mut SplitMix64) -> Topology {
    let mut order: Vec<usize> = (0..nodes).collect();
    for i in (1..nodes).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let edges = (0..nodes)
        .map(|i| ordered(order[i], order[(i + 1) % nodes]))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Topology { nodes, edges }
}

/// One draw of a simple `degree`-regular graph; `None` when it got stuck.
fn draw(nodes: usize, degree: usize, rng: &mut SplitMix64) -> Option<Vec<(usize, usize)>> {
    let mut stubs: Vec<usize> = (0..nodes)
        .flat_map(|v| std::iter::repeat_n(v, degree))
        .collect();
    let mut edges = BTreeSet::new();
    let fits = |edges: &BTreeSet<(usize, usize)>, a: usize, b: usize| {
        a != b && !edges.contains(&ordered(a, b))
    };
    while !stubs.is_empty() {
        let mut pick = None;
        for _ in 0..PICKS {
            let (i, j) = (rng.below(stubs.len()), rng.below(stubs.len()));
            if i != j && fits(&edges, stubs[i], stubs[j]) {
                pick = Some((i, j));
                break;
            }
        }
        if pick.is_none() {
            let fitting: Vec<(usize, usize)> = (0..stubs.len())
                .flat_map(|i| (i + 1..stubs.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| fits(&edges, stubs[i], stubs[j]))
                .collect();
            if fitting.is_empty() {
                return None;
            }
            pick = Some(fitting[rng.below(fitting.len())]);
        }
        let (i, j) = pick?;
        edges.insert(ordered(stubs[i], stubs[j]));
        // The higher index first, so the lower one still names the same stub.
        stubs.swap_remove(i.max(j));
        stubs.swap_remove(i.min(j));
    }
    Some(edges.into_iter().collect())
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// splitmix64: small, fast and fixed, so a seed names one graph forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0); the modulo bias is negligible for graph sizes.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
