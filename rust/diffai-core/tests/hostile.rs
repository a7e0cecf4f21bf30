//! Files that change or are not files: a mapped file truncated while it is read gives
//! `<file>: changed while being read` (no SIGBUS), and FIFOs, sockets and devices are refused
//! before anything opens them.

use diffai_core::stats::{self, Control};
use diffai_core::{open, Error};
use std::io::Write;
use std::path::Path;

/// A safetensors file holding one f32 tensor `w` of `n` elements, value i at position i.
fn write_safetensors(path: &Path, n: usize) {
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        n * 4
    );
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    f.write_all(&data).unwrap();
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn truncated_while_mapped_is_an_error_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinks.safetensors");
    let n = 4 << 20; // 16 MB of data: thousands of pages past the new end
    write_safetensors(&path, n);
    let model = open(&path, None).unwrap();
    let w = &model.tensors[0];
    let before = stats::tensor_stats(w, &Control::default()).unwrap();
    assert_eq!(before.numel, n as u64);
    assert_eq!(before.max, (n - 1) as f64);

    // Truncate the mapped file to its header, then read it again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let err = message(stats::tensor_stats(w, &Control::default()).unwrap_err());
    assert_eq!(err, format!("{}: changed while being read", path.display()));
    // Every later read of that model says the same; values too.
    let err = message(stats::to_f64(w, 0, Some(10)).unwrap_err());
    assert!(err.ends_with("changed while being read"), "{err}");

    // Another, intact file mapped meanwhile still reads correctly.
    let other = dir.path().join("intact.safetensors");
    write_safetensors(&other, 1000);
    let m2 = open(&other, None).unwrap();
    let s = stats::tensor_stats(&m2.tensors[0], &Control::default()).unwrap();
    assert_eq!(s.mean, 499.5);
}

#[test]
fn truncated_during_pair_stats_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_safetensors(&a, 1 << 20);
    write_safetensors(&b, 1 << 20);
    let (ma, mb) = (open(&a, None).unwrap(), open(&b, None).unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = message(
        stats::pair_stats(&ma.tensors[0], &mb.tensors[0], 0.0, &Control::default()).unwrap_err(),
    );
    assert_eq!(err, format!("{}: changed while being read", b.display()));
}

#[test]
fn fifo_socket_and_device_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.safetensors");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Opening a FIFO for reading would block forever: this returns at once.
    let err = message(open(&fifo, None).unwrap_err());
    assert_eq!(
        err,
        format!(
            "{}: is a FIFO (named pipe), not a regular file",
            fifo.display()
        )
    );
    let err = message(diffai_core::detect(&fifo).unwrap_err());
    assert!(
        err.ends_with("is a FIFO (named pipe), not a regular file"),
        "{err}"
    );

    let sock = dir.path().join("sock.pt");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = message(open(&sock, None).unwrap_err());
    assert_eq!(
        err,
        format!("{}: is a socket, not a regular file", sock.display())
    );

    let err = message(open(Path::new("/dev/zero"), None).unwrap_err());
    assert_eq!(err, "/dev/zero: is a device, not a regular file");
    let err = message(open(dir.path(), None).unwrap_err());
    assert!(err.ends_with("is a directory"), "{err}");
}

#[test]
fn symlink_loop_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (
        dir.path().join("x.safetensors"),
        dir.path().join("y.safetensors"),
    );
    std::os::unix::fs::symlink(&y, &x).unwrap();
    std::os::unix::fs::symlink(&x, &y).unwrap();
    let err = message(open(&x, None).unwrap_err());
    assert!(err.contains("Too many levels of symbolic links"), "{err}");
}
