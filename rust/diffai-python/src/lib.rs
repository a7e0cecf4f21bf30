//! `diffai._core`: the Python face of diffai-core. Opening files, statistics and histograms run
//! with the GIL released on a worker thread; the calling thread wakes every 100 ms to report
//! progress and to notice Ctrl-C. Every error, and any panic, becomes `DiffaiError`.

use diffai_core::stats::{self, Control};
use diffai_core::{DType, Error, Format, Model as CoreModel, Scalar, Storage, Tensor};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

mod diff;
mod quantized;
mod results;
use results::{ChangeMetrics, TensorComparison, TensorStats};

create_exception!(
    _core,
    DiffaiError,
    PyException,
    "A model file could not be read, or a request did not fit it."
);

fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        other => DiffaiError::new_err(other.to_string()),
    }
}

/// A loaded model: its tensors stay in the file's memory map (or the caller's arrays).
#[pyclass(frozen, module = "diffai._core")]
struct Model {
    inner: Arc<CoreModel>,
    index: FxHashMap<String, usize>,
    /// Each tensor's name and shape as Python objects, made once (when first asked for) and
    /// shared by `tensors`, `align` and every statistics object (a model can hold tens of
    /// thousands).
    py_infos: GILOnceCell<Vec<PyInfo>>,
}

struct PyInfo {
    name: Py<PyString>,
    shape: Py<PyTuple>,
}

/// A dtype's name as one interned Python string per process.
fn py_dtype(py: Python<'_>, dtype: DType) -> &Py<PyString> {
    static NAMES: GILOnceCell<Vec<Py<PyString>>> = GILOnceCell::new();
    let names = NAMES.get_or_init(py, || {
        let mut names: Vec<_> = DType::ALL.iter().map(|_| None).collect();
        for d in DType::ALL {
            names[d as usize] = Some(PyString::intern(py, d.name()).unbind());
        }
        names.into_iter().flatten().collect()
    });
    &names[dtype as usize]
}

/// The dtype a tensor shows: how the file stores it when it is decoded on read (`qint8 per-channel`).
pub(crate) fn tensor_dtype(py: Python<'_>, t: &Tensor) -> Py<PyString> {
    match &t.encoded {
        Some(e) => PyString::intern(py, &e.dtype).unbind(),
        None => py_dtype(py, t.dtype).clone_ref(py),
    }
}

impl Model {
    pub(crate) fn wrap(inner: CoreModel) -> Model {
        let index = inner
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Model {
            inner: Arc::new(inner),
            index,
            py_infos: GILOnceCell::new(),
        }
    }

    fn py_infos(&self, py: Python<'_>) -> PyResult<&[PyInfo]> {
        self.py_infos
            .get_or_try_init(py, || {
                self.inner
                    .tensors
                    .iter()
                    .map(|t| {
                        Ok(PyInfo {
                            name: PyString::new(py, &t.name).unbind(),
                            shape: PyTuple::new(py, &t.shape)?.unbind(),
                        })
                    })
                    .collect()
            })
            .map(Vec::as_slice)
    }

    pub(crate) fn position(&self, name: &str) -> PyResult<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| DiffaiError::new_err(format!("no tensor named {name:?}")))
    }

    fn tensor(&self, name: &str) -> PyResult<Tensor> {
        Ok(self.inner.tensors[self.position(name)?].clone())
    }
}

/// Unmapping a multi-GB file and freeing tens of thousands of tensor entries takes milliseconds
/// the caller need not wait for: on Unix, where a mapped file can be replaced or deleted at once,
/// a large model read from a file is dropped on a thread of its own. (In-memory models hold
/// Python buffers, which are released here, with the GIL.)
impl Drop for Model {
    fn drop(&mut self) {
        let tensors = &self.inner.tensors;
        let large = || {
            tensors.len() >= 1024 || tensors.iter().map(Tensor::nbytes).sum::<usize>() >= 1 << 28
        };
        if cfg!(unix) && self.inner.format != Format::InMemory && large() {
            // Python objects first, on this thread: freeing them while the other thread holds
            // the address-space lock to unmap would wait for it.
            drop(self.py_infos.take());
            let inner =
                std::mem::replace(&mut self.inner, Arc::new(CoreModel::new(Format::InMemory)));
            let index = std::mem::take(&mut self.index);
            let _ = std::thread::Builder::new()
                .name("diffai-drop".into())
                .spawn(move || drop((inner, index)));
        }
    }
}

#[pymethods]
impl Model {
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format.name()
    }

    /// `{name: (dtype, shape, nbytes)}` for every tensor, in file order.
    #[getter]
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (t, i) in self.inner.tensors.iter().zip(self.py_infos(py)?) {
            d.set_item(&i.name, (tensor_dtype(py, t), &i.shape, t.stored_nbytes()))?;
        }
        Ok(d)
    }

    /// `{name: (layout, nnz)}` for the sparse tensors (`sparse_coo`, `sparse_csr`, ...; nnz is
    /// the stored index entries, duplicates of an uncoalesced COO included).
    #[getter]
    fn sparse(&self) -> HashMap<String, (&'static str, usize)> {
        (self.inner.tensors.iter())
            .filter_map(|t| {
                let parts = t.sparse.as_ref()?;
                Some((t.name.clone(), (parts.layout.name(), parts.nnz())))
            })
            .collect()
    }

    /// The names of the tensors decoded on read (PyTorch quantized tensors, read as their
    /// dequantized values), each with the dtype the file stores.
    #[getter]
    fn encoded(&self) -> HashMap<String, String> {
        (self.inner.tensors.iter())
            .filter_map(|t| Some((t.name.clone(), t.encoded.as_ref()?.dtype.clone())))
            .collect()
    }

    /// Every tensor's name, in file order.
    #[getter]
    fn names(&self, py: Python<'_>) -> PyResult<Vec<Py<PyString>>> {
        Ok(self
            .py_infos(py)?
            .iter()
            .map(|i| i.name.clone_ref(py))
            .collect())
    }

    #[getter]
    fn scalars<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, PyObject)>> {
        self.inner
            .scalars
            .iter()
            .map(|(name, value)| {
                let v: PyObject = match value {
                    Scalar::None => py.None(),
                    Scalar::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
                    Scalar::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
                    Scalar::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
                    Scalar::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
                    Scalar::Other(text) => text.into_pyobject(py)?.into_any().unbind(),
                };
                Ok((name.clone(), v))
            })
            .collect()
    }

    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        self.inner.metadata.clone()
    }

    /// Classes a pickle referenced outside the allowlist, kept inert (never imported or called).
    #[getter]
    fn inert_classes(&self) -> Vec<String> {
        self.inner.inert_classes.clone()
    }

    /// `(name, given)`: an entry whose name an earlier entry already had, and the name it got.
    #[getter]
    fn name_collisions(&self) -> Vec<(String, String)> {
        self.inner.name_collisions.clone()
    }

    /// `(name, reason)` for entries found but not read as tensors or scalars.
    #[getter]
    fn skipped(&self) -> Vec<(String, String)> {
        self.inner
            .skipped
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.tensors.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<diffai._core.Model {} with {} tensors>",
            self.inner.format.name(),
            self.inner.tensors.len()
        )
    }
}

/// Caller-owned bytes (a NumPy array's buffer) kept alive while Rust reads them.
struct PyBytesOwner(PyBuffer<u8>);

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `from_buffers` accepts only C-contiguous buffers; the PyBuffer holds a
        // reference that keeps the memory alive and unmoved for as long as this owner exists.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, self.0.len_bytes()) }
    }
}

/// Runs `job` on a worker thread inside a Rayon pool of `threads` threads (0: all cores; checked
/// by `diffai_core::threads::check`) with the GIL released, while this thread reports progress
/// and watches for Ctrl-C.
fn run<T: Send + 'static>(
    py: Python<'_>,
    threads: i64,
    progress: Option<&Bound<'_, PyAny>>,
    job: impl FnOnce(&Control) -> diffai_core::Result<T> + Send + 'static,
) -> PyResult<T> {
    let ctl = Arc::new(Control::default());
    let pool = pool(threads)?;
    let (tx, rx) = mpsc::channel();
    let worker_ctl = ctl.clone();
    std::thread::spawn(move || {
        // The control is installed for the thread so loops without one (the pickle VM) see Ctrl-C.
        let scoped = || diffai_core::cancel::scope(worker_ctl.clone(), || job(&worker_ctl));
        let out = catch_unwind(AssertUnwindSafe(|| pool.install(scoped)));
        let _ = tx.send(out);
    });
    // Stops the worker and waits until it no longer touches the data, then returns `err`.
    let cancel = |rx: mpsc::Receiver<_>, err: PyErr| -> PyResult<T> {
        ctl.cancel.store(true, Ordering::Relaxed);
        let _ = py.allow_threads(move || rx.recv());
        Err(err)
    };
    let mut reported = 0u64;
    let mut rx = rx;
    loop {
        // The receiver moves into the GIL-free wait and back: it cannot be shared across threads.
        let (waited, back) =
            py.allow_threads(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        let done = ctl.bytes_done.load(Ordering::Relaxed);
        if let (Some(cb), true) = (progress, done != reported) {
            if let Err(e) = cb.call1((done,)) {
                return cancel(rx, e);
            }
            reported = done;
        }
        match waited {
            Ok(Ok(result)) => return result.map_err(to_py_err),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(DiffaiError::new_err(format!(
                    "internal error in diffai's Rust core (please report): {msg}"
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    return cancel(rx, e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(DiffaiError::new_err(
                    "internal error: worker thread vanished",
                ));
            }
        }
    }
}

fn pool(threads: i64) -> PyResult<Arc<rayon::ThreadPool>> {
    let threads = diffai_core::threads::check(threads).map_err(to_py_err)?;
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("diffai-{i}"))
        .build()
        .map_err(|e| DiffaiError::new_err(format!("cannot start {threads} threads: {e}")))?;
    // 0 (all cores) and the same count asked by number share one pool: starting a second pool
    // of cold threads inside a call cost ~15 ms on a 20k-tensor diff.
    let p = pools
        .entry(p.current_num_threads())
        .or_insert_with(|| Arc::new(p))
        .clone();
    pools.insert(threads, p.clone());
    Ok(p)
}

fn format_arg(format: Option<&str>) -> PyResult<Option<Format>> {
    format
        .map(|f| {
            diffai_core::model::format_from_name(f).ok_or_else(|| {
                DiffaiError::new_err(format!(
                    "unknown format {f:?} (expected safetensors, pytorch, npy, npz, mat or gguf)"
                ))
            })
        })
        .transpose()
}

/// Reads a model file; `format` overrides detection from the file's bytes.
#[pyfunction]
#[pyo3(signature = (path, format=None))]
fn open(py: Python<'_>, path: PathBuf, format: Option<&str>) -> PyResult<Model> {
    let format = format_arg(format)?;
    // On the shared pool, not a one-thread one: both sides of a diff are opened from two Python
    // threads, and their headers parse (and index) at the same time.
    run(py, 0, None, move |_| {
        diffai_core::open(&path, format).map(Model::wrap)
    })
}

/// The format name detected from a file's bytes (`mat73` for MATLAB v7.3/HDF5).
#[pyfunction]
fn detect(py: Python<'_>, path: PathBuf) -> PyResult<&'static str> {
    run(py, 0, None, move |_| diffai_core::detect(&path)).map(Format::name)
}

/// A model over caller-owned arrays: `(name, dtype, shape, buffer)` per tensor, where buffer is a
/// C-contiguous byte buffer (e.g. `array.reshape(-1).view(numpy.uint8)`), little-endian.
#[pyfunction]
fn from_buffers(items: Vec<(String, String, Vec<usize>, Bound<'_, PyAny>)>) -> PyResult<Model> {
    let mut model = CoreModel::new(Format::InMemory);
    for (name, dtype, shape, obj) in items {
        let dt = DType::from_name(&dtype)
            .ok_or_else(|| DiffaiError::new_err(format!("{name}: unsupported dtype {dtype:?}")))?;
        let buf = PyBuffer::<u8>::get(&obj)
            .map_err(|e| DiffaiError::new_err(format!("{name}: not a byte buffer: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(DiffaiError::new_err(format!(
                "{name}: buffer is not C-contiguous"
            )));
        }
        let len = buf.len_bytes();
        let t = Tensor::contiguous(
            name,
            dt,
            shape,
            Storage::new(Arc::new(PyBytesOwner(buf)), 0..len),
        );
        t.check_bounds().map_err(DiffaiError::new_err)?; // a shape whose size overflows
        if t.nbytes() != len {
            return Err(DiffaiError::new_err(format!(
                "{}: shape {:?} of {} needs {} bytes, buffer has {len}",
                t.name,
                t.shape,
                dt,
                t.nbytes()
            )));
        }
        model.tensors.push(t);
    }
    Ok(Model::wrap(model))
}

/// One model from the shards of a sharded checkpoint, `(label, model)` in shard order: the
/// tensors side by side, still mapped from their shards; a tensor two shards hold is an error.
/// Scalars and metadata are left to the caller (`diffai.shards` merges them).
#[pyfunction]
fn merge_shards(py: Python<'_>, shards: Vec<(String, PyRef<'_, Model>)>) -> PyResult<Model> {
    let parts: Vec<(String, CoreModel)> = (shards.iter())
        .map(|(label, m)| (label.clone(), (*m.inner).clone()))
        .collect();
    run(py, 0, None, move |_| {
        diffai_core::shards::merge(parts).map(Model::wrap)
    })
}

/// Statistics of the named tensors, computed in parallel. `progress(bytes_done)` is called
/// from this thread while the work runs.
#[pyfunction]
#[pyo3(signature = (model, names, threads=0, progress=None))]
fn tensor_stats<'py>(
    py: Python<'py>,
    model: &Model,
    names: Vec<PyBackedStr>,
    threads: i64,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<Py<TensorStats>>> {
    // Positions into the shared model, not clones: a model can hold tens of thousands of tensors.
    let at = names
        .iter()
        .map(|n| model.position(n))
        .collect::<PyResult<Vec<_>>>()?;
    let inner = model.inner.clone();
    let out = run(py, threads, progress, move |ctl| {
        use rayon::prelude::*;
        at.par_iter()
            .map(|&i| Ok((i, stats::tensor_stats(&inner.tensors[i], ctl)?)))
            .collect::<diffai_core::Result<Vec<_>>>()
    })?;
    let infos = model.py_infos(py)?;
    out.iter()
        .map(|(i, st)| {
            let t = &model.inner.tensors[*i];
            TensorStats::computed(py, t, &tensor_dtype(py, t), &infos[*i].shape, st)
        })
        .collect()
}

/// Counts of the finite elements of a tensor in `bins` equal bins over [lo, hi].
#[pyfunction]
#[pyo3(signature = (model, name, bins, lo, hi, threads=0))]
fn histogram(
    py: Python<'_>,
    model: &Model,
    name: &str,
    bins: usize,
    lo: f64,
    hi: f64,
    threads: i64,
) -> PyResult<Vec<u64>> {
    let t = model.tensor(name)?;
    run(py, threads, None, move |ctl| {
        stats::histogram(&t, bins, lo, hi, ctl)
    })
}

/// A tensor's elements (or `count` of them from `start`) as native f64 bytes in C order, for
/// `numpy.frombuffer`.
#[pyfunction]
#[pyo3(signature = (model, name, start=0, count=None, threads=0))]
fn values<'py>(
    py: Python<'py>,
    model: &Model,
    name: &str,
    start: usize,
    count: Option<usize>,
    threads: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    let t = model.tensor(name)?;
    diffai_core::threads::check(threads).map_err(to_py_err)?;
    // A few mapped or in-memory chunks' worth (what clustering reads, 32 small matrices per run)
    // is decoded right here without the GIL: a worker thread and a pool hand-off cost ~1 ms per
    // call on a busy machine, more than the decoding, and there is nothing to cancel.
    let small = count.unwrap_or(t.numel().saturating_sub(start)) <= stats::CHUNK;
    let vals = if small && t.storage.resident().is_some() && t.sparse.is_none() {
        py.allow_threads(|| stats::to_f64(&t, start, count))
            .map_err(to_py_err)?
    } else {
        run(py, threads, None, move |_| stats::to_f64(&t, start, count))?
    };
    f64_bytes(py, &vals)
}

fn f64_bytes<'py>(py: Python<'py>, vals: &[f64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, vals.len() * 8, |out| {
        for (o, v) in out.chunks_exact_mut(8).zip(vals) {
            o.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// For each of the first `rows` rows of a's tensor `name_a` and b's `name_b`, read as
/// [_, width]: a.b, a.a and b.b, as native f64 bytes (3 per row).
#[pyfunction]
#[pyo3(signature = (a, name_a, b, name_b, rows, width, threads=0))]
#[allow(clippy::too_many_arguments)]
fn row_products<'py>(
    py: Python<'py>,
    a: &Model,
    name_a: &str,
    b: &Model,
    name_b: &str,
    rows: usize,
    width: usize,
    threads: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    let (ta, tb) = (a.tensor(name_a)?, b.tensor(name_b)?);
    let sums = run(py, threads, None, move |ctl| {
        stats::row_products(&ta, &tb, rows, width, ctl)
    })?;
    f64_bytes(py, sums.as_flattened())
}

/// `(dots, sq_a, sq_b)` as native f64 bytes: <a_i, b_j> for every a tensor `names_a[i]` and b
/// tensor `names_b[j]` (row-major), and, when `squares`, each one's squared norm (else empty
/// bytes), summed in one pass (`diffai_core::gram`). None when a tensor is not in memory as it
/// is (compressed): the caller reads it block by block instead.
#[pyfunction]
#[pyo3(signature = (a, names_a, b, names_b, threads=0, squares=true))]
#[allow(clippy::type_complexity)]
fn cross_dots<'py>(
    py: Python<'py>,
    a: &Model,
    names_a: Vec<PyBackedStr>,
    b: &Model,
    names_b: Vec<PyBackedStr>,
    threads: i64,
    squares: bool,
) -> PyResult<
    Option<(
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    )>,
> {
    let ta = names_a
        .iter()
        .map(|n| a.tensor(n))
        .collect::<PyResult<Vec<_>>>()?;
    let tb = names_b
        .iter()
        .map(|n| b.tensor(n))
        .collect::<PyResult<Vec<_>>>()?;
    if ta.iter().chain(&tb).any(|t| t.storage.resident().is_none()) {
        return Ok(None);
    }
    let d = run(py, threads, None, move |ctl| {
        diffai_core::gram::cross_dots(&ta, &tb, squares, ctl)
    })?;
    Ok(Some((
        f64_bytes(py, &d.dots)?,
        f64_bytes(py, &d.sq_a)?,
        f64_bytes(py, &d.sq_b)?,
    )))
}

/// A tensor's elements as f64, `block` at a time (native bytes, C order): what analyses of
/// large tensors read, so that memory holds one block, not a float64 copy of the tensor. A
/// compressed tensor is inflated once, here, not once per block.
#[pyclass(module = "diffai._core")]
struct ValueBlocks {
    tensor: Tensor,
    /// A sparse tensor's entries, read once: each block is laid from them over zeros.
    sparse: Option<Arc<diffai_core::sparse::Entries>>,
    next: usize,
    block: usize,
    threads: i64,
}

#[pymethods]
impl ValueBlocks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let numel = self.tensor.numel();
        if self.next >= numel {
            return Ok(None);
        }
        let (t, start, count) = (
            self.tensor.clone(),
            self.next,
            self.block.min(numel - self.next),
        );
        let vals = match &self.sparse {
            Some(entries) => {
                let mut vals = vec![0.0; count];
                entries.fill(start, &mut vals);
                vals
            }
            None => run(py, self.threads, None, move |_| {
                stats::to_f64(&t, start, Some(count))
            })?,
        };
        self.next += count;
        f64_bytes(py, &vals).map(Some)
    }
}

#[pyfunction]
#[pyo3(signature = (model, name, block, threads=0))]
fn value_blocks(
    py: Python<'_>,
    model: &Model,
    name: &str,
    block: usize,
    threads: i64,
) -> PyResult<ValueBlocks> {
    if block == 0 {
        return Err(DiffaiError::new_err("block must be at least one element"));
    }
    diffai_core::threads::check(threads).map_err(to_py_err)?; // refused now, not at the first block
    let mut tensor = model.tensor(name)?;
    let t = tensor.clone();
    let sparse = run(py, 0, None, move |_| diffai_core::sparse::Entries::of(&t))?.map(Arc::new);
    if sparse.is_none() && tensor.storage.resident().is_none() {
        let t = tensor.clone();
        let bytes = run(py, threads, None, move |_| {
            Ok(t.storage.load()?.into_owned())
        })?;
        tensor.storage = Storage::from_vec(bytes);
    }
    Ok(ValueBlocks {
        tensor,
        sparse,
        next: 0,
        block,
        threads,
    })
}

/// The worker-thread count asked for (0: every core) as the pool size every call uses, or a
/// `DiffaiError` saying why it is refused: the one check the API and the CLI share.
#[pyfunction]
fn check_threads(threads: i64) -> PyResult<usize> {
    diffai_core::threads::check(threads).map_err(to_py_err)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DiffaiError", m.py().get_type::<DiffaiError>())?;
    m.add("CHUNK_ELEMENTS", stats::CHUNK)?;
    m.add_class::<Model>()?;
    m.add_class::<TensorStats>()?;
    m.add_class::<ChangeMetrics>()?;
    m.add_class::<TensorComparison>()?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(detect, m)?)?;
    m.add_function(wrap_pyfunction!(from_buffers, m)?)?;
    m.add_function(wrap_pyfunction!(merge_shards, m)?)?;
    m.add_function(wrap_pyfunction!(tensor_stats, m)?)?;
    m.add_class::<diff::PyDiffOptions>()?;
    m.add_class::<diff::DiffPlan>()?;
    m.add_class::<diff::ModelDiffRows>()?;
    m.add_function(wrap_pyfunction!(diff::plan_diff, m)?)?;
    m.add_function(wrap_pyfunction!(diff::fold, m)?)?;
    m.add_function(wrap_pyfunction!(histogram, m)?)?;
    m.add_function(wrap_pyfunction!(values, m)?)?;
    m.add_function(wrap_pyfunction!(value_blocks, m)?)?;
    m.add_function(wrap_pyfunction!(row_products, m)?)?;
    m.add_function(wrap_pyfunction!(cross_dots, m)?)?;
    m.add_function(wrap_pyfunction!(check_threads, m)?)?;
    m.add_class::<ValueBlocks>()?;
    quantized::register(m)?;
    Ok(())
}
