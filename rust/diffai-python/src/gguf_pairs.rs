//! Pairs whose GGUF side llama.cpp's converter stored with permuted q/k rows: compared in the
//! core's kernels with the GGUF rows read back in Hugging Face order
//! (`stats::pair_stats_reordered`), in one pass over both tensors.

use crate::results::{ChangeMetrics, TensorComparison, TensorStats};
use crate::{py_dtype, run, DiffaiError, Model};
use diffai_core::gguf::llama_qk_rows;
use diffai_core::stats::{self, RowOrder};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;

/// For each name: a's tensor of that name against b's tensor of the name at the same place in
/// `b_names`, the side whose `heads` entry is not 0 read with llama.cpp's q/k row permutation
/// of that many heads undone. Named `prefix + name`, as `pair_stats`.
#[pyfunction]
#[pyo3(signature = (a, b, names, b_names, a_heads, b_heads, epsilon=0.0, threads=0, prefix="", progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn pair_stats_unpermuted<'py>(
    py: Python<'py>,
    a: &Model,
    b: &Model,
    names: Vec<PyBackedStr>,
    b_names: Vec<PyBackedStr>,
    a_heads: Vec<usize>,
    b_heads: Vec<usize>,
    epsilon: f64,
    threads: usize,
    prefix: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<Py<TensorComparison>>> {
    if [b_names.len(), a_heads.len(), b_heads.len()] != [names.len(); 3] {
        return Err(DiffaiError::new_err(
            "names, b_names, a_heads and b_heads must have the same length",
        ));
    }
    let at = names
        .iter()
        .zip(&b_names)
        .map(|(x, y)| Ok((a.position(x)?, b.position(y)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let (ma, mb) = (a.inner.clone(), b.inner.clone());
    let heads: Vec<(usize, usize)> = a_heads.into_iter().zip(b_heads).collect();
    let out = run(py, threads, progress, move |ctl| {
        use rayon::prelude::*;
        at.par_iter()
            .zip(&heads)
            .map(|(&(i, j), &(ha, hb))| {
                let (ta, tb) = (&ma.tensors[i], &mb.tensors[j]);
                let rows = |t: &diffai_core::Tensor, h: usize| {
                    (h > 0)
                        .then(|| llama_qk_rows(t.shape.first().copied().unwrap_or(0), h))
                        .transpose()
                        .map_err(|e| diffai_core::Error::Invalid(format!("{}: {e}", t.name)))
                };
                let (ra, rb) = (rows(ta, ha)?, rows(tb, hb)?);
                let (oa, ob) = (
                    ra.as_deref().map(|rows| RowOrder { rows }),
                    rb.as_deref().map(|rows| RowOrder { rows }),
                );
                let s = stats::pair_stats_reordered(ta, tb, oa, ob, epsilon, ctl)?;
                Ok(((i, j), s))
            })
            .collect::<diffai_core::Result<Vec<_>>>()
    })?;
    let (infos_a, infos_b) = (a.py_infos(py)?, b.py_infos(py)?);
    out.iter()
        .map(|((i, j), (x, y, p))| {
            let (ta, tb) = (&a.inner.tensors[*i], &b.inner.tensors[*j]);
            TensorComparison::compared(
                py,
                PyString::new(py, &format!("{prefix}{}", ta.name)).unbind(),
                TensorStats::computed(py, ta, py_dtype(py, ta.dtype), &infos_a[*i].shape, x)?,
                TensorStats::computed(py, tb, py_dtype(py, tb.dtype), &infos_b[*j].shape, y)?,
                ChangeMetrics::computed(py, p)?,
            )
        })
        .collect::<PyResult<Vec<_>>>()
}
