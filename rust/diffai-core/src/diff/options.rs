//! What to compare and how, checked once: every value a diff runs with has passed `new`.

use crate::{threads, Error, Result};
use regex::Regex;

/// Which names a diff keeps: those containing `path` (when given) and not matching `ignore`.
#[derive(Clone, Debug, Default)]
pub struct NameFilter {
    pub path: Option<String>,
    pub ignore: Option<Regex>,
}

impl NameFilter {
    pub fn is_active(&self) -> bool {
        self.path.is_some() || self.ignore.is_some()
    }

    /// How many of `names` the path filter keeps and the ignore filter drops.
    pub fn hits<'n>(&self, names: impl Iterator<Item = &'n str> + Clone) -> (usize, usize) {
        let path = self
            .path
            .as_deref()
            .map_or(0, |p| names.clone().filter(|n| n.contains(p)).count());
        let ignore = self
            .ignore
            .as_ref()
            .map_or(0, |r| names.filter(|n| r.is_match(n)).count());
        (path, ignore)
    }

    /// Whether the filters keep a pair of tensors known by two names (a prefix stripped, a GGUF
    /// name mapped): the path in either name, the ignore pattern in neither.
    pub fn keeps_pair(&self, a: &str, b: &str) -> bool {
        let path = self
            .path
            .as_deref()
            .is_none_or(|p| a.contains(p) || b.contains(p));
        path && !self
            .ignore
            .as_ref()
            .is_some_and(|r| r.is_match(a) || r.is_match(b))
    }

    pub fn keeps(&self, name: &str) -> bool {
        if let Some(p) = &self.path {
            if !name.contains(p.as_str()) {
                return false;
            }
        }
        !self.ignore.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// The options of one diff. `epsilon`: element (and float scalar) differences up to this size
/// are no change. `align`: strip wrapper prefixes (`module.`, ...) when that pairs more tensors;
/// `strip_prefix`: (prefix stripped from a's names, from b's) instead. `shape_only`: headers
/// only. `threads`: worker threads (0: every core). `gram_max_tensors`: sum the similarity
/// matrix's inner products over up to this many same-shape pairs in the diff's pass
/// (`diff::gram`; 0: none). `row_products`: sum a.b, a.a and b.b of each row of the 2-D pairs
/// whose module (the name before its last '.') it matches in the diff's pass (`diff::rows`).
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    pub epsilon: f64,
    pub filter: NameFilter,
    pub align: bool,
    pub strip_prefix: Option<(String, String)>,
    pub shape_only: bool,
    pub threads: usize,
    pub gram_max_tensors: usize,
    pub row_products: Option<Regex>,
}

/// The most pairs whose Gram the diff's pass sums: a block of each (up to 2 x 8 KB of f32) is
/// in cache together, and a chunk's lanes (n^2 x 32 bytes) are held per worker.
pub const GRAM_MAX_TENSORS: usize = 256;

impl DiffOptions {
    /// Options from what a user typed: `ignore_keys_regex` is a regular expression searched in
    /// each name, `strip_prefix` is `"A:B"`.
    pub fn new(
        epsilon: f64,
        path: Option<String>,
        ignore_keys_regex: Option<&str>,
        align: bool,
        strip_prefix: Option<&str>,
        shape_only: bool,
        threads: i64,
    ) -> Result<DiffOptions> {
        if !(epsilon >= 0.0 && epsilon.is_finite()) {
            return Err(Error::Invalid(format!(
                "epsilon must be a finite number >= 0, got {}",
                float_text(epsilon)
            )));
        }
        let ignore = match ignore_keys_regex {
            Some(re) if !re.is_empty() => Some(Regex::new(re).map_err(|e| {
                let reason = e.to_string();
                let reason = reason
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                Error::Invalid(format!("invalid --ignore-keys-regex {re:?}: {reason}"))
            })?),
            _ => None,
        };
        Ok(DiffOptions {
            epsilon,
            filter: NameFilter { path, ignore },
            align,
            strip_prefix: strip_prefix.map(parse_strip_prefix).transpose()?,
            shape_only,
            threads: threads::check(threads)?,
            gram_max_tensors: 0,
            row_products: None,
        })
    }

    /// These options with the similarity matrix's Gram requested over up to `tensors` pairs
    /// (0: none; at most `GRAM_MAX_TENSORS`).
    pub fn with_gram_max_tensors(mut self, tensors: i64) -> Result<DiffOptions> {
        self.gram_max_tensors = usize::try_from(tensors)
            .ok()
            .filter(|&n| n <= GRAM_MAX_TENSORS)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "similarity_max_tensors (the Gram summed in the diff's pass) must be \
                     between 0 (none) and {GRAM_MAX_TENSORS}, got {tensors}"
                ))
            })?;
        Ok(self)
    }

    /// These options with per-row products requested for the 2-D pairs whose module matches
    /// `module_regex` (searched; None or empty: none).
    pub fn with_row_products(mut self, module_regex: Option<&str>) -> Result<DiffOptions> {
        self.row_products = match module_regex {
            Some(re) if !re.is_empty() => Some(Regex::new(re).map_err(|e| {
                Error::Invalid(format!("invalid row_products module regex {re:?}: {e}"))
            })?),
            _ => None,
        };
        Ok(self)
    }
}

/// `--strip-prefix A:B`: A is stripped from a's names, B from b's (either may be empty).
pub fn parse_strip_prefix(spec: &str) -> Result<(String, String)> {
    let Some((a, b)) = spec.split_once(':') else {
        return Err(Error::Invalid(format!(
            "--strip-prefix {spec:?}: expected A:B (the prefix stripped from a's names, then b's; \
             either may be empty, e.g. ':module.')"
        )));
    };
    if a.is_empty() && b.is_empty() {
        return Err(Error::Invalid(
            "--strip-prefix ':': give a prefix for a, for b or both".into(),
        ));
    }
    Ok((a.to_string(), b.to_string()))
}

/// A float as a user would write it back (`nan`, `-inf`, `-1.0`).
fn float_text(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        (if x > 0.0 { "inf" } else { "-inf" }).into()
    } else {
        format!("{x:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(eps: f64, re: Option<&str>, strip: Option<&str>, threads: i64) -> Result<DiffOptions> {
        DiffOptions::new(eps, None, re, true, strip, false, threads)
    }

    #[test]
    fn refuses_what_cannot_run() {
        for eps in [f64::NAN, -1.0, f64::INFINITY] {
            let e = opts(eps, None, None, 0).unwrap_err().to_string();
            assert!(e.starts_with("epsilon must be a finite number >= 0"), "{e}");
        }
        let e = opts(0.0, Some("("), None, 0).unwrap_err().to_string();
        assert!(e.starts_with("invalid --ignore-keys-regex \"(\""), "{e}");
        assert!(opts(0.0, None, Some("nocolon"), 0).is_err());
        assert!(opts(0.0, None, Some(":"), 0).is_err());
        assert!(opts(0.0, None, None, -1).is_err());
        for bad in [-1, GRAM_MAX_TENSORS as i64 + 1] {
            let e = opts(0.0, None, None, 0).unwrap().with_gram_max_tensors(bad);
            assert!(e
                .unwrap_err()
                .to_string()
                .starts_with("similarity_max_tensors"));
        }
        let o = opts(0.0, None, None, 0).unwrap();
        assert_eq!(o.gram_max_tensors, 0);
        assert_eq!(o.with_gram_max_tensors(24).unwrap().gram_max_tensors, 24);
    }

    #[test]
    fn filter_keeps_path_matches_not_ignored() {
        let o = DiffOptions::new(
            0.0,
            Some("layer".into()),
            Some(r"\.bias$"),
            true,
            None,
            false,
            2,
        )
        .unwrap();
        assert!(o.filter.keeps("layer.0.weight"));
        assert!(!o.filter.keeps("layer.0.bias"));
        assert!(!o.filter.keeps("head.weight"));
        assert_eq!(o.threads, 2);
        assert_eq!(
            opts(0.5, None, Some(":module."), 0).unwrap().strip_prefix,
            Some((String::new(), "module.".to_string()))
        );
    }
}
