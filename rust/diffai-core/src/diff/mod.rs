//! The diff of two opened models: names aligned (`align`), kept by the filters, tensors compared
//! in parallel with the kernels of `stats`, renamed tensors found by their contents, the change
//! rule applied, scalars and metadata compared (`scalars`). What it returns (`ModelDiff`) holds
//! one row per tensor name, in the order the records are listed, and the summary counts.
//!
//! Two steps, so that a caller can compare some pairs its own way between them (Python compares
//! integer codes with a scale as dequantized values): `plan` decides what is compared with what,
//! `compare` reads the tensors.

pub mod align;
pub mod fold;
pub mod gram;
pub mod json;
pub mod options;
pub mod rows;
pub mod scalars;
#[cfg(test)]
mod tests;
pub mod yaml;

pub use gram::Gram;
pub use options::{DiffOptions, NameFilter, GRAM_MAX_TENSORS};
pub use rows::RowProducts;

use crate::stats::{self, Compared, Control, PairStats, TensorStats};
use crate::{DType, Format, Model, Result, Scalar, Skipped, Tensor};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// Rounds of content comparisons between removed and added tensors with the same exact facts
/// (dtype, shape, NaN/inf/zero counts, min, max): each round tries one more candidate each.
pub const RENAME_ROUNDS: usize = 8;

/// One side of a diff: the model's tensors, and the leaves the caller read with them (a
/// mapping's scalars live outside the core model; keys are unique).
pub struct Side<'a> {
    pub model: &'a Model,
    pub scalars: &'a [(String, Scalar)],
    pub metadata: &'a [(String, String)],
    pub skipped: &'a [Skipped],
    /// Names paired by another key than themselves (a GGUF name by its Hugging Face name):
    /// given, they replace prefix alignment.
    pub keys: Option<&'a FxHashMap<String, String>>,
    /// Tensors whose values the caller reads (a quantized logical weight's stand-in, `view`):
    /// never read here; every pair holding one is compared by the caller (`elsewhere`).
    pub opaque: &'a FxHashSet<usize>,
    /// Tensors whose rows are compared in another order than stored (tensor index -> the
    /// stored row of each logical row: a GGUF q/k tensor with llama.cpp's permutation undone).
    pub row_orders: Option<&'a FxHashMap<usize, Vec<usize>>>,
}

impl Side<'_> {
    fn rows_of(&self, i: usize) -> Option<stats::RowOrder<'_>> {
        self.row_orders?
            .get(&i)
            .map(|rows| stats::RowOrder { rows })
    }
}

impl<'a> Side<'a> {
    pub fn of(model: &'a Model) -> Side<'a> {
        Side {
            model,
            scalars: &model.scalars,
            metadata: &model.metadata,
            skipped: &model.skipped,
            keys: None,
            opaque: empty_set(),
            row_orders: None,
        }
    }
}

/// The empty set of opaque tensors, borrowed by sides that have none.
pub fn empty_set() -> &'static FxHashSet<usize> {
    static EMPTY: std::sync::OnceLock<FxHashSet<usize>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(FxHashSet::default)
}

/// Names matched after stripping a prefix from each side's names.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    pub a_prefix: String,
    pub b_prefix: String,
    /// Tensors paired by the stripped names.
    pub paired: usize,
    /// Chosen by the diff (else given as `strip_prefix`).
    pub automatic: bool,
}

/// How many names (tensors, scalars, metadata keys) the path filter kept and the ignore filter
/// dropped: a filter that matched nothing is worth telling the user.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FilterHits {
    pub path: usize,
    pub ignore: usize,
}

/// What is compared with what (tensor indices into each side's model).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub a_names: Vec<usize>,
    pub same: Vec<(usize, usize)>,
    pub reshaped: Vec<(usize, usize)>,
    pub added: Vec<usize>,
    pub alignment: Option<Alignment>,
    /// Some a tensor is compared with a b tensor of another name (aligned prefixes, two .npy).
    pub b_renamed: bool,
    pub hits: FilterHits,
    /// One name seen (for a note when the path filter matched none).
    pub example_name: Option<String>,
}

/// What happened to one tensor name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Added,
    Removed,
    Renamed,
    Reshaped,
    Changed,
    Unchanged,
    /// Same shape and dtype, values not read (headers only).
    NotCompared,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Removed => "removed",
            Status::Renamed => "renamed",
            Status::Reshaped => "reshaped",
            Status::Changed => "changed",
            Status::Unchanged => "unchanged",
            Status::NotCompared => "not_compared",
        }
    }

    /// Whether the name is a diff record (a difference), not only a comparison.
    pub fn is_record(self) -> bool {
        !matches!(self, Status::Unchanged | Status::NotCompared)
    }
}

/// One tensor name: a's tensor (absent for added ones), b's (absent for removed ones; b's own
/// name for a renamed one), their statistics (None: headers only, or compared by the caller) and
/// the change between them.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub status: Status,
    pub a: Option<usize>,
    pub b: Option<usize>,
    pub stats_a: Option<TensorStats>,
    pub stats_b: Option<TensorStats>,
    pub change: Option<PairStats>,
    /// Compared by the caller (`compare`'s `elsewhere`): statistics are the caller's.
    pub elsewhere: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub added: u64,
    pub removed: u64,
    pub renamed: u64,
    pub reshaped: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub not_compared: u64,
    pub params_a: u64,
    pub params_b: u64,
}

impl Summary {
    fn count(&mut self, s: Status) {
        *match s {
            Status::Added => &mut self.added,
            Status::Removed => &mut self.removed,
            Status::Renamed => &mut self.renamed,
            Status::Reshaped => &mut self.reshaped,
            Status::Changed => &mut self.changed,
            Status::Unchanged => &mut self.unchanged,
            Status::NotCompared => &mut self.not_compared,
        } += 1;
    }
}

/// An entry a reader could not read: on one side it is a difference; on both it is listed
/// apart (`unread`), not known to differ.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedEntry {
    pub name: String,
    /// "a", "b" or "a and b".
    pub side: &'static str,
    pub reason: String,
    pub unread: bool,
}

/// The diff of two models. Names are the models' own (the caller adds a folder's file prefix).
#[derive(Clone, Debug, Default)]
pub struct ModelDiff {
    /// One per tensor name: a's names in a's order, then the names only b holds.
    pub rows: Vec<Row>,
    pub summary: Summary,
    /// Scalar and metadata keys whose values differ (the values are the sides').
    pub scalars_changed: Vec<String>,
    pub metadata_changed: Vec<String>,
    pub skipped: Vec<SkippedEntry>,
    /// The similarity matrix's inner products over the group `gram::group` chose, when asked
    /// for (`DiffOptions::gram_max_tensors`) and there is one.
    pub gram: Option<Gram>,
    /// The embedding analysis's per-row products of the pairs `rows::pairs` chose, when asked
    /// for (`DiffOptions::row_products`), in record order.
    pub row_products: Vec<RowProducts>,
}

/// What is compared with what: names as they are or after stripping prefixes (`opts.align`,
/// `opts.strip_prefix`), then the filters on each side's own names (`prefix` + name: a
/// folder's file). Two single-array .npy files compare their arrays whatever they are called.
pub fn plan(a: &Side, b: &Side, opts: &DiffOptions, prefix: &str) -> Result<Plan> {
    let (ta, tb) = (&a.model.tensors, &b.model.tensors);
    let mut pairing = align::pair(ta, tb, ("", a.keys), ("", b.keys))?;
    let mut out = Plan::default();
    let keyed = a.keys.is_some() || b.keys.is_some();
    let mut prefixes = opts
        .strip_prefix
        .clone()
        .filter(|_| !keyed)
        .map(|p| (p, false));
    let unpaired = pairing.same.len() + pairing.reshaped.len() < pairing.a_names.len();
    if prefixes.is_none() && !keyed && opts.align && !pairing.added.is_empty() && unpaired {
        prefixes = align::choose_prefixes(&tensor_names(ta), &tensor_names(tb)).map(|p| (p, true));
    }
    if let Some(((pa, pb), automatic)) = prefixes {
        pairing = align::pair(ta, tb, (&pa, None), (&pb, None))?;
        let paired = pairing.same.len() + pairing.reshaped.len();
        out.alignment = Some(Alignment {
            a_prefix: pa,
            b_prefix: pb,
            paired,
            automatic,
        });
    }
    let f = &opts.filter;
    if f.is_active() {
        let full = |n: &str| format!("{prefix}{n}");
        // b's own name of each a tensor paired under another name: a filter may name either.
        let b_of: FxHashMap<usize, usize> = (pairing.same.iter().chain(&pairing.reshaped))
            .copied()
            .filter(|&(i, j)| ta[i].name != tb[j].name)
            .collect();
        let names: Vec<String> = (pairing.a_names.iter().map(|&i| full(&ta[i].name)))
            .chain(b_of.values().map(|&j| full(&tb[j].name)))
            .chain(pairing.added.iter().map(|&j| full(&tb[j].name)))
            .chain(a.scalars.iter().chain(b.scalars).map(|(k, _)| full(k)))
            .chain(a.metadata.iter().chain(b.metadata).map(|(k, _)| full(k)))
            .collect();
        out.example_name = names.first().cloned();
        (out.hits.path, out.hits.ignore) = f.hits(names.iter().map(String::as_str));
        let keeps = |t: &Tensor| f.keeps(&full(&t.name));
        let keeps_a = |i: usize| match b_of.get(&i) {
            Some(&j) => f.keeps_pair(&full(&ta[i].name), &full(&tb[j].name)),
            None => keeps(&ta[i]),
        };
        pairing.a_names.retain(|&i| keeps_a(i));
        pairing.same.retain(|&(i, _)| keeps_a(i));
        pairing.reshaped.retain(|&(i, _)| keeps_a(i));
        pairing.added.retain(|&j| keeps(&tb[j]));
    }
    let npy = a.model.format == Format::Npy && b.model.format == Format::Npy;
    if npy && pairing.a_names.len() == 1 && pairing.added.len() == 1 {
        // A .npy holds one unnamed array (named by its file stem).
        let (i, j) = (pairing.a_names[0], pairing.added[0]);
        let same = ta[i].shape == tb[j].shape;
        pairing.same = if same { vec![(i, j)] } else { vec![] };
        pairing.reshaped = if same { vec![] } else { vec![(i, j)] };
        pairing.added.clear();
        out.b_renamed = true;
    } else {
        let renamed = |&(i, j): &(usize, usize)| ta[i].name != tb[j].name;
        out.b_renamed = pairing.same.iter().chain(&pairing.reshaped).any(renamed);
    }
    out.a_names = pairing.a_names;
    out.same = pairing.same;
    out.reshaped = pairing.reshaped;
    out.added = pairing.added;
    Ok(out)
}

fn tensor_names(t: &[Tensor]) -> Vec<&str> {
    align::unique_names(t).into_iter().map(|n| n.0).collect()
}

impl Plan {
    /// The tensors of side a (`a_side`) or b read alone: with no same-shape pair.
    pub fn read_alone(&self, a_side: bool) -> Vec<usize> {
        if a_side {
            let paired: FxHashSet<usize> = self.same.iter().map(|p| p.0).collect();
            self.a_names
                .iter()
                .copied()
                .filter(|i| !paired.contains(i))
                .collect()
        } else {
            self.reshaped
                .iter()
                .map(|p| p.1)
                .chain(self.added.iter().copied())
                .collect()
        }
    }

    /// Bytes `compare` reads (for progress): every tensor once, both sides of a pair.
    pub fn bytes(&self, a: &Model, b: &Model) -> u64 {
        let (ta, tb) = (&a.tensors, &b.tensors);
        let only_a = self.read_alone(true).into_iter().map(|i| ta[i].nbytes());
        let only_b = self.read_alone(false).into_iter().map(|j| tb[j].nbytes());
        let same = self
            .same
            .iter()
            .map(|&(i, j)| ta[i].nbytes() + tb[j].nbytes());
        only_a.chain(only_b).chain(same).map(|n| n as u64).sum()
    }
}

/// What the caller found comparing a pair itself: how many elements differ, and whether the
/// two sides' stored types differ (a logical weight's representation is the caller's to name).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Elsewhere {
    /// None: values not read (headers only).
    pub diff_count: Option<u64>,
    pub dtypes_differ: bool,
}

/// Reads and compares what `plan` paired (`prefix`: as given to `plan`). `elsewhere`: a's
/// tensors of same-shape pairs the caller compared itself (the change rule decides their status
/// too; their rows carry no statistics), which must include every pair holding an opaque tensor.
pub fn compare(
    a: &Side,
    b: &Side,
    plan: &Plan,
    opts: &DiffOptions,
    prefix: &str,
    elsewhere: &FxHashMap<usize, Elsewhere>,
    ctl: &Control,
) -> Result<ModelDiff> {
    let (ta, tb) = (&a.model.tensors, &b.model.tensors);
    let only_a = plan.read_alone(true);
    // b's tensors read alone (reshaped partners and added ones), by index: an added tensor may
    // have the own name of an a tensor paired under another name.
    let only_b = plan.read_alone(false);
    let reshaped_to: FxHashMap<usize, usize> = plan.reshaped.iter().copied().collect();
    let by_kernel: Vec<(usize, usize)> = plan
        .same
        .iter()
        .copied()
        .filter(|p| !elsewhere.contains_key(&p.0))
        .collect();
    if let Some(&(i, _)) = by_kernel
        .iter()
        .filter(|_| !opts.shape_only)
        .find(|&&(i, j)| a.opaque.contains(&i) || b.opaque.contains(&j))
    {
        return Err(crate::Error::Invalid(format!(
            "{}: a pair holding a tensor the caller reads was not compared by the caller",
            ta[i].name
        )));
    }

    let grouped = if opts.shape_only {
        Vec::new()
    } else {
        gram::group(a, b, &by_kernel, opts.gram_max_tensors)
    };
    let rowed = if opts.shape_only {
        Vec::new()
    } else {
        let module = opts.row_products.as_ref();
        rows::pairs(a, b, &by_kernel, &grouped, module, prefix)
    };
    let mut row_products = Vec::new();
    let mut gram = None;
    let (single_a, single_b, pairs) = if opts.shape_only {
        (
            vec![None; only_a.len()],
            vec![None; only_b.len()],
            vec![None; by_kernel.len()],
        )
    } else {
        // An opaque tensor's statistics are the caller's.
        let read = |t: &Tensor, opaque: bool| {
            if opaque {
                Ok(None)
            } else {
                stats::tensor_stats(t, ctl).map(Some)
            }
        };
        let single_a = only_a
            .par_iter()
            .map(|&i| read(&ta[i], a.opaque.contains(&i)))
            .collect::<Result<Vec<_>>>()?;
        let single_b = only_b
            .par_iter()
            .map(|&j| read(&tb[j], b.opaque.contains(&j)))
            .collect::<Result<Vec<_>>>()?;
        // The Gram's group in one pass of its own (its chunks in parallel), beside the others.
        let in_group: FxHashSet<usize> = grouped.iter().map(|p| p.0).collect();
        let with_rows: FxHashSet<usize> = rowed.iter().map(|p| p.0).collect();
        let (fused, others) = rayon::join(
            || {
                let tensors: Vec<_> = grouped.iter().map(|&(i, j)| (&ta[i], &tb[j])).collect();
                stats::pair_stats_gram(&tensors, opts.epsilon, ctl)
            },
            || {
                (by_kernel.par_iter())
                    .map(|&(i, j)| {
                        if in_group.contains(&i) {
                            return Ok((None, None));
                        }
                        if with_rows.contains(&i) {
                            let width = ta[i].shape[1];
                            let (s, sums) =
                                stats::pair_stats_rows(&ta[i], &tb[j], width, opts.epsilon, ctl)?;
                            return Ok((Some(s), Some(sums)));
                        }
                        stats::pair_stats_reordered(
                            &ta[i],
                            &tb[j],
                            a.rows_of(i),
                            b.rows_of(j),
                            opts.epsilon,
                            ctl,
                        )
                        .map(|s| (Some(s), None))
                    })
                    .collect::<Result<Vec<_>>>()
            },
        );
        let (fused, dots) = fused?;
        let (mut pairs, sums): (Vec<_>, Vec<_>) = others?.into_iter().unzip();
        row_products = (by_kernel.iter().zip(sums))
            .filter_map(|(&(i, _), sums)| Some(RowProducts { a: i, sums: sums? }))
            .collect();
        let fused: FxHashMap<usize, Compared> = grouped.iter().map(|p| p.0).zip(fused).collect();
        for (s, &(i, _)) in pairs.iter_mut().zip(&by_kernel) {
            if let Some(f) = fused.get(&i) {
                *s = Some(*f);
            }
        }
        if !grouped.is_empty() {
            gram = Some(Gram {
                a: grouped.iter().map(|p| p.0).collect(),
                dots,
            });
        }
        (single_a, single_b, pairs)
    };
    let single_a: FxHashMap<usize, Option<TensorStats>> =
        only_a.iter().copied().zip(single_a).collect();
    let single_b: FxHashMap<usize, Option<TensorStats>> =
        only_b.iter().copied().zip(single_b).collect();
    let pairs: FxHashMap<usize, (usize, Option<Compared>)> = by_kernel
        .iter()
        .zip(pairs)
        .map(|(&(i, j), s)| (i, (j, s)))
        .collect();
    let b_of: FxHashMap<usize, usize> = plan.same.iter().copied().collect();

    // A tensor only a holds and one only b holds, equal element by element: one renamed tensor.
    let mut renames = FxHashMap::default();
    if !plan.added.is_empty() && !opts.shape_only && only_a.len() > plan.reshaped.len() {
        let reshaped: FxHashSet<usize> = plan.reshaped.iter().map(|p| p.0).collect();
        let gone: Vec<(usize, TensorStats)> = (only_a.iter())
            .filter(|i| !reshaped.contains(i))
            .filter_map(|&i| single_a[&i].map(|s| (i, s)))
            .collect();
        let added: Vec<(usize, TensorStats)> = plan
            .added
            .iter()
            .filter_map(|&j| single_b[&j].map(|s| (j, s)))
            .collect();
        renames = find_renames(ta, tb, &gone, &added, ctl)?;
    }
    let renamed_to: FxHashSet<usize> = renames.values().map(|r: &(usize, _)| r.0).collect();

    let mut out = ModelDiff {
        gram,
        row_products,
        ..ModelDiff::default()
    };
    let push = |out: &mut ModelDiff, row: Row| {
        let s = &mut out.summary;
        s.count(row.status);
        s.params_a += row.a.map_or(0, |i| ta[i].numel() as u64);
        s.params_b += row.b.map_or(0, |j| tb[j].numel() as u64);
        out.rows.push(row);
    };
    let opaque = |i: Option<usize>, j: Option<usize>| {
        i.is_some_and(|i| a.opaque.contains(&i)) || j.is_some_and(|j| b.opaque.contains(&j))
    };
    for &i in &plan.a_names {
        let mut row = if let Some(e) = elsewhere.get(&i) {
            let j = b_of[&i];
            let change = e.diff_count.map(|diff_count| PairStats {
                diff_count,
                ..Default::default()
            });
            let status = change_rule_of(e.dtypes_differ, change.as_ref());
            Row {
                status,
                a: Some(i),
                b: Some(j),
                stats_a: None,
                stats_b: None,
                change: None,
                elsewhere: true,
            }
        } else if let Some((j, s)) = pairs.get(&i) {
            let (stats_a, stats_b, change) = match s {
                Some((x, y, p)) => (Some(*x), Some(*y), Some(*p)),
                None => (None, None, None),
            };
            let status = change_rule(&ta[i], &tb[*j], change.as_ref());
            Row {
                status,
                a: Some(i),
                b: Some(*j),
                stats_a,
                stats_b,
                change,
                elsewhere: false,
            }
        } else if let Some(&j) = reshaped_to.get(&i) {
            Row {
                status: Status::Reshaped,
                a: Some(i),
                b: Some(j),
                stats_a: single_a[&i],
                stats_b: single_b[&j],
                change: None,
                elsewhere: false,
            }
        } else if let Some(&(j, (x, y, p))) = renames.get(&i) {
            Row {
                status: Status::Renamed,
                a: Some(i),
                b: Some(j),
                stats_a: Some(x),
                stats_b: Some(y),
                change: Some(p),
                elsewhere: false,
            }
        } else {
            Row {
                status: Status::Removed,
                a: Some(i),
                b: None,
                stats_a: single_a[&i],
                stats_b: None,
                change: None,
                elsewhere: false,
            }
        };
        row.elsewhere |= opaque(row.a, row.b);
        push(&mut out, row);
    }
    for &j in plan.added.iter().filter(|j| !renamed_to.contains(j)) {
        let stats_b = single_b[&j];
        let elsewhere = opaque(None, Some(j));
        push(
            &mut out,
            Row {
                status: Status::Added,
                a: None,
                b: Some(j),
                stats_a: None,
                stats_b,
                change: None,
                elsewhere,
            },
        );
    }

    compare_leaves(a, b, opts, prefix, &mut out);
    Ok(out)
}

/// Scalars, metadata and unread entries: which differ, under the filters.
fn compare_leaves(a: &Side, b: &Side, opts: &DiffOptions, prefix: &str, out: &mut ModelDiff) {
    let keeps = |k: &str| opts.filter.keeps(&format!("{prefix}{k}"));
    let (sa, sb): (FxHashMap<_, _>, FxHashMap<_, _>) = (
        a.scalars.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        b.scalars.iter().map(|(k, v)| (k.as_str(), v)).collect(),
    );
    out.scalars_changed = (scalars::union(a.scalars, b.scalars).into_iter())
        .filter(|k| {
            keeps(k) && !scalars::scalar_equal(sa.get(k).copied(), sb.get(k).copied(), opts.epsilon)
        })
        .map(String::from)
        .collect();
    let (ma, mb): (FxHashMap<_, _>, FxHashMap<_, _>) = (
        a.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        b.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect(),
    );
    out.metadata_changed = (scalars::union(a.metadata, b.metadata).into_iter())
        .filter(|k| keeps(k) && ma.get(k) != mb.get(k))
        .map(String::from)
        .collect();
    // An entry neither file lets diffai read is not known to differ: listed apart, once.
    let names = |s: &[Skipped]| s.iter().map(|e| e.name.clone()).collect::<FxHashSet<_>>();
    let (in_a, in_b) = (names(a.skipped), names(b.skipped));
    for (side, entries, other) in [("a", a.skipped, &in_b), ("b", b.skipped, &in_a)] {
        for e in entries.iter().filter(|e| keeps(&e.name)) {
            let both = other.contains(&e.name);
            if !(both && side == "b") {
                out.skipped.push(SkippedEntry {
                    name: e.name.clone(),
                    side: if both { "a and b" } else { side },
                    reason: e.reason.clone(),
                    unread: both,
                });
            }
        }
    }
}

/// Changed when any element differs (by more than epsilon) or the dtype differs; with headers
/// only, changed when the dtype differs and otherwise not known.
pub fn change_rule(a: &Tensor, b: &Tensor, change: Option<&PairStats>) -> Status {
    change_rule_of(!a.same_dtype(b), change)
}

/// `change_rule` given whether the stored types differ.
pub fn change_rule_of(dtypes_differ: bool, change: Option<&PairStats>) -> Status {
    match change {
        _ if dtypes_differ => Status::Changed,
        Some(p) if p.diff_count > 0 => Status::Changed,
        Some(_) => Status::Unchanged,
        None => Status::NotCompared,
    }
}

/// The exact facts equal contents share (no rounded sum): dtype, shape, NaN/inf/zero counts and
/// the range (-0.0 as 0.0, as they compare equal).
fn content_key<'t>(t: &'t Tensor, s: &TensorStats) -> (DType, &'t str, Vec<usize>, [u64; 5]) {
    let bits = |x: Option<f64>| x.map_or(u64::MAX, |v| (v + 0.0).to_bits());
    (
        t.dtype,
        t.shown_dtype(),
        t.shape.clone(),
        [
            s.nan_count,
            s.inf_count,
            s.zero_count,
            bits(s.min()),
            bits(s.max()),
        ],
    )
}

/// a's removed tensor -> (b's added tensor, their statistics) for tensors equal element by
/// element: candidates share `content_key` (in b's order); each round compares every pending
/// removed tensor with its next untaken candidate.
#[allow(clippy::type_complexity)]
fn find_renames(
    ta: &[Tensor],
    tb: &[Tensor],
    removed: &[(usize, TensorStats)],
    added: &[(usize, TensorStats)],
    ctl: &Control,
) -> Result<FxHashMap<usize, (usize, (TensorStats, TensorStats, PairStats))>> {
    let mut by_key: FxHashMap<_, Vec<usize>> = FxHashMap::default();
    for (j, s) in added {
        by_key.entry(content_key(&tb[*j], s)).or_default().push(*j);
    }
    // In removed order, as the rounds try them; a found one leaves (None).
    let mut pending: Vec<Option<(usize, Vec<usize>)>> = (removed.iter())
        .filter_map(|(i, s)| {
            by_key
                .get(&content_key(&ta[*i], s))
                .map(|c| Some((*i, c.clone())))
        })
        .collect();
    let mut found = FxHashMap::default();
    let mut taken = FxHashSet::default();
    for _ in 0..RENAME_ROUNDS {
        let mut used = FxHashSet::default();
        let mut trial = Vec::new();
        for (k, (i, candidates)) in pending
            .iter()
            .enumerate()
            .filter_map(|(k, p)| Some((k, p.as_ref()?)))
        {
            if let Some(&j) = candidates
                .iter()
                .find(|j| !taken.contains(*j) && !used.contains(*j))
            {
                trial.push((k, *i, j));
                used.insert(j);
            }
        }
        if trial.is_empty() {
            break;
        }
        let results = (trial.par_iter())
            .map(|&(_, i, j)| stats::pair_stats(&ta[i], &tb[j], 0.0, ctl))
            .collect::<Result<Vec<_>>>()?;
        for (&(k, i, j), r) in trial.iter().zip(results) {
            if r.2.diff_count == 0 && ta[i].same_dtype(&tb[j]) {
                found.insert(i, (j, r));
                taken.insert(j);
                pending[k] = None;
            } else if let Some((_, candidates)) = &mut pending[k] {
                candidates.retain(|&c| c != j);
            }
        }
    }
    Ok(found)
}
