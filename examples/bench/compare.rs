//! Comparisons within a run: each variant of a scenario (a kind of link, signed or
//! unsigned deltas) set against its baseline (`plain`, `unsigned`) *in the same round*,
//! then the median and range of those ratios. Rounds alternate the variants, rotated so
//! none always runs first ([`order`]); on a shared machine the ratio within a round is far
//! steadier than either rate alone.

use std::collections::BTreeMap;

use crate::links::LinkKind;
use crate::signing::Signing;
use crate::stats::{median, thousands};

/// One variant of a comparable run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Variant {
    pub link: LinkKind,
    pub signing: Signing,
}

/// One measured run.
pub struct Run {
    /// The scenario and its size, e.g. `sync N=100,000`.
    pub what: String,
    pub variant: Variant,
    pub round: usize,
    pub rate: f64,
    /// CPU seconds of the source and of the receiver on the run.
    pub cpu_src: Option<f64>,
    pub cpu_dst: Option<f64>,
}

impl Run {
    fn cpu(&self) -> Option<f64> {
        Some(self.cpu_src? + self.cpu_dst?)
    }
}

/// What a comparison table varies; the other axis becomes part of the row's label.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Link,
    Signing,
}

impl Axis {
    /// The row label (scenario plus the fixed axis) and the variant's name on this axis.
    fn split(self, r: &Run) -> (String, &'static str) {
        match self {
            Axis::Link => {
                let signed = match r.variant.signing {
                    Signing::Unsigned => "",
                    Signing::Signed => ", signed",
                };
                (format!("{}{signed}", r.what), r.variant.link.name())
            }
            Axis::Signing => {
                let link = match r.variant.link {
                    LinkKind::Plain => String::new(),
                    other => format!(", {} link", other.name()),
                };
                (format!("{}{link}", r.what), r.variant.signing.name())
            }
        }
    }

    fn is_baseline(self, v: Variant) -> bool {
        match self {
            Axis::Link => v.link == LinkKind::Plain,
            Axis::Signing => v.signing == Signing::Unsigned,
        }
    }
}

/// The variants of round `round`: every combination, rotated each round, so no variant
/// always runs first (on a cold cache) or last.
pub fn order(links: &[LinkKind], signings: &[Signing], round: usize) -> Vec<Variant> {
    let mut v: Vec<Variant> = links
        .iter()
        .flat_map(|&link| {
            signings
                .iter()
                .map(move |&signing| Variant { link, signing })
        })
        .collect();
    if !v.is_empty() {
        let by = round % v.len();
        v.rotate_left(by);
    }
    v
}

fn spread(v: Vec<f64>, f: &dyn Fn(f64) -> String) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    format!("{} ({}-{})", f(median(v)), f(lo), f(hi))
}

/// The comparison table along `axis`: per row and variant, the median and range of the
/// rate and of the nodes' CPU seconds, and each against the baseline in the same round.
/// With verification bounds (verifications per second, by round), signed rows are also set
/// against the bound of their round.
pub fn print(runs: &[Run], axis: Axis, verify_bounds: &BTreeMap<usize, f64>) {
    let mut rows: BTreeMap<String, Vec<(&'static str, &Run)>> = BTreeMap::new();
    for r in runs {
        let (label, name) = axis.split(r);
        rows.entry(label).or_default().push((name, r));
    }
    let bound_column = axis == Axis::Signing && !verify_bounds.is_empty();
    println!(
        "\n| run | {} | rounds | deltas/s, median (range) | CPU-s A + B, median (range) | \
         CPU-s B, median (range) | rate / {base}, median (range) | CPU / {base}, median (range) |{}",
        if axis == Axis::Link { "link" } else { "deltas" },
        if bound_column { " rate / verify bound |" } else { "" },
        base = if axis == Axis::Link { "plain" } else { "unsigned" },
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|{}",
        if bound_column { "---:|" } else { "" }
    );
    let two = |x: f64| format!("{x:.2}");
    let rate = |x: f64| thousands(x);
    for (label, runs) in rows {
        let baseline: BTreeMap<usize, &Run> = runs
            .iter()
            .filter(|(_, r)| axis.is_baseline(r.variant))
            .map(|(_, r)| (r.round, *r))
            .collect();
        let mut variants: Vec<Variant> = runs.iter().map(|(_, r)| r.variant).collect();
        variants.sort();
        variants.dedup();
        for variant in variants {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|(_, r)| r.variant == variant)
                .map(|(_, r)| *r)
                .collect();
            let name = axis.split(mine[0]).1;
            let rates: Vec<f64> = mine.iter().map(|r| r.rate).collect();
            let cpus = mine.iter().filter_map(|r| r.cpu()).collect();
            let dst = mine.iter().filter_map(|r| r.cpu_dst).collect();
            let (rate_ratio, cpu_ratio) = if axis.is_baseline(variant) {
                ("-".to_owned(), "-".to_owned())
            } else {
                let pairs: Vec<(&Run, &Run)> = mine
                    .iter()
                    .filter_map(|r| baseline.get(&r.round).map(|b| (*r, *b)))
                    .collect();
                let rr = pairs.iter().map(|(r, b)| r.rate / b.rate).collect();
                let cr = pairs
                    .iter()
                    .filter_map(|(r, b)| Some(r.cpu()? / b.cpu()?))
                    .collect();
                (spread(rr, &two), spread(cr, &two))
            };
            let bound = match (bound_column, variant.signing) {
                (false, _) => String::new(),
                (true, Signing::Signed) => {
                    let ratios = mine
                        .iter()
                        .filter_map(|r| Some(r.rate / verify_bounds.get(&r.round)?))
                        .collect();
                    format!(" {} |", spread(ratios, &two))
                }
                (true, Signing::Unsigned) => " - |".to_owned(),
            };
            println!(
                "| {label} | {name} | {} | {} | {} | {} | {rate_ratio} | {cpu_ratio} |{bound}",
                mine.len(),
                spread(rates, &rate),
                spread(cpus, &two),
                spread(dst, &two),
            );
        }
    }
}
