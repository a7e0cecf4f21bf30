//! The container on hand-built files (hostile ones included) and the decoders on blocks whose
//! values are known by hand. Every type is also checked against llama.cpp's gguf-py in
//! tests/test_gguf.py.

use super::*;
use crate::stats::{self, Control};
use std::io::Write;

/// A GGUF v3 file, built field by field.
#[derive(Default)]
struct File {
    kvs: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    tensor_count: u64,
    data: Vec<u8>,
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl File {
    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kvs.extend(string(key));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend_from_slice(value);
        self.kv_count += 1;
        self
    }

    /// A tensor of ggml type `ty` and ggml dims (row length first) with its bytes appended.
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> Self {
        self.infos.extend(string(name));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| self.infos.extend(d.to_le_bytes()));
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend_from_slice(bytes);
        self.data.resize(self.data.len().next_multiple_of(32), 0);
        self.tensor_count += 1;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(self.tensor_count.to_le_bytes());
        v.extend(self.kv_count.to_le_bytes());
        v.extend(&self.kvs);
        v.extend(&self.infos);
        v.resize(v.len().next_multiple_of(32), 0);
        v.extend(&self.data);
        v
    }
}

fn load_bytes(bytes: &[u8]) -> Result<Model> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    load(f.path())
}

fn refused(bytes: &[u8], why: &str) {
    match load_bytes(bytes) {
        Ok(_) => panic!("accepted a file that should fail with {why:?}"),
        Err(e) => assert!(e.to_string().contains(why), "{e} lacks {why:?}"),
    }
}

fn q8_0_block(d: f32, codes: impl Fn(usize) -> i8) -> Vec<u8> {
    let mut b = half::f16::from_f32(d).to_le_bytes().to_vec();
    b.extend((0..32).map(|i| codes(i) as u8));
    b
}

fn valid() -> File {
    File::default()
        .kv("general.architecture", 8, &string("llama"))
        .kv("n", 4, &7u32.to_le_bytes())
        .tensor(
            "w",
            &[32, 2],
            8,
            &[
                q8_0_block(0.5, |i| i as i8 - 16),
                q8_0_block(-2.0, |i| i as i8),
            ]
            .concat(),
        )
        .tensor(
            "b",
            &[3],
            0,
            &[1f32, 2.0, 3.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>(),
        )
}

#[test]
fn reads_tensors_metadata_and_q8_0_values() {
    let m = load_bytes(&valid().bytes()).unwrap();
    assert_eq!(m.format, Format::Gguf);
    assert_eq!(
        m.metadata,
        [
            ("general.architecture".into(), "llama".into()),
            ("n".into(), "7".into())
        ]
    );
    let w = &m.tensors[0];
    assert_eq!(
        (w.name.as_str(), w.dtype, w.shape.clone()),
        ("w", DType::Q8_0, vec![2, 32])
    );
    let values = stats::to_f64(w, 0, None).unwrap();
    let want: Vec<f64> = (0..32)
        .map(|i| 0.5 * (i as f64 - 16.0))
        .chain((0..32).map(|i| -2.0 * i as f64))
        .collect();
    assert_eq!(values, want);
    // A window that starts and ends inside blocks.
    assert_eq!(stats::to_f64(w, 5, Some(40)).unwrap(), want[5..45]);
    let s = stats::tensor_stats(w, &Control::default()).unwrap();
    assert_eq!((s.min, s.max, s.numel), (-62.0, 7.5, 64));
    assert_eq!(m.tensors[1].shape, [3]);
}

#[test]
fn unaligned_windows_match_the_whole_decode_for_every_codec() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for dtype in DType::ALL.into_iter().filter(|d| d.codec().is_some()) {
        let codec = dtype.codec().unwrap();
        let blocks = 3;
        let bytes: Vec<u8> = (0..blocks * codec.bytes)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        let t = Tensor::contiguous(
            "t".into(),
            dtype,
            vec![blocks * codec.elems],
            Storage::from_vec(bytes),
        );
        let whole = stats::to_f64(&t, 0, None).unwrap();
        let (start, n) = (codec.elems / 2 + 1, codec.elems + 3);
        let part = stats::to_f64(&t, start, Some(n)).unwrap();
        let same = part
            .iter()
            .zip(&whole[start..start + n])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{dtype}");
    }
}

#[test]
fn known_values_of_small_codecs() {
    let decode = |dtype: DType, block: &[u8]| {
        let c = dtype.codec().unwrap();
        let mut out = vec![0f32; c.elems];
        (c.decode)(block, &mut out);
        out
    };
    // Q4_0: d = 1, byte 0x9F: value 0 is 15 - 8 = 7, value 16 is 9 - 8 = 1.
    let mut q4 = half::f16::from_f32(1.0).to_le_bytes().to_vec();
    q4.extend([0x9F; 16]);
    let v = decode(DType::Q4_0, &q4);
    assert_eq!((v[0], v[16]), (7.0, 1.0));
    // MXFP4: scale byte 128 is 2^(128 - 127) halved = 1; code 7 is E2M1 6, stored doubled (12).
    let mut mx = vec![128u8];
    mx.extend([0xF7; 16]);
    let v = decode(DType::MXFP4, &mx);
    assert_eq!((v[0], v[16]), (12.0, -12.0));
    // IQ4_NL: d = 0.5, code 0 -> -127 * 0.5, code 15 -> 113 * 0.5.
    let mut iq4 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    iq4.extend([0xF0; 16]);
    let v = decode(DType::IQ4_NL, &iq4);
    assert_eq!((v[0], v[16]), (-63.5, 56.5));
}

#[test]
fn every_truncation_is_refused_without_panic() {
    let bytes = valid().bytes();
    // The last 20 bytes pad the last tensor (12 bytes) to the alignment; a file may omit them.
    for n in 0..bytes.len() - 20 {
        assert!(
            load_bytes(&bytes[..n]).is_err(),
            "prefix of {n} bytes accepted"
        );
    }
}

#[test]
fn hostile_headers_are_refused_with_the_reason() {
    let with_counts = |tensors: u64, kvs: u64| {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(tensors.to_le_bytes());
        v.extend(kvs.to_le_bytes());
        v.extend([0u8; 64]);
        v
    };
    refused(&with_counts(0, u64::MAX), "key-values cannot fit");
    refused(&with_counts(u64::MAX / 2, 0), "tensor infos cannot fit");
    let mut v1 = valid().bytes();
    v1[4] = 1;
    refused(&v1, "version 1");
    let mut be = valid().bytes();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    refused(&be, "big-endian");

    let long_string = File::default().kv("s", 8, &u64::MAX.to_le_bytes());
    refused(&long_string.bytes(), "truncated");
    let mut long_array = 0u32.to_le_bytes().to_vec();
    long_array.extend((u64::MAX / 4).to_le_bytes());
    refused(
        &File::default().kv("a", 9, &long_array).bytes(),
        "array elements cannot fit",
    );
    let mut deep = Vec::new();
    for _ in 0..6 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    deep.extend(0u32.to_le_bytes());
    deep.extend(0u64.to_le_bytes());
    refused(&File::default().kv("a", 9, &deep).bytes(), "nested deeper");
    refused(&File::default().kv("b", 7, &[2]).bytes(), "neither 0 nor 1");
    refused(
        &File::default().kv("x", 13, &[0; 8]).bytes(),
        "unknown value type 13",
    );
    refused(
        &File::default()
            .kv("general.alignment", 4, &24u32.to_le_bytes())
            .bytes(),
        "not a power of two",
    );
    refused(
        &File::default()
            .kv("k", 4, &[0; 4])
            .kv("k", 4, &[0; 4])
            .bytes(),
        "k appears twice",
    );

    let block = q8_0_block(1.0, |_| 1);
    refused(
        &File::default()
            .tensor("t", &[32, 1, 1, 1, 1], 8, &block)
            .bytes(),
        "5 dimensions",
    );
    refused(
        &File::default().tensor("t", &[16, 2], 8, &block).bytes(),
        "whole 32-value q8_0 blocks",
    );
    refused(
        &File::default().tensor("t", &[32, 2], 8, &block).bytes(),
        "run past the end",
    );
    refused(
        &File::default().tensor("t", &[], 8, &block).bytes(),
        "not whole 32-value q8_0 blocks",
    );
    refused(
        &File::default()
            .tensor("t", &[u64::MAX, u64::MAX], 0, &block)
            .bytes(),
        "overflow",
    );
    refused(
        &File::default()
            .tensor("t", &[32], 8, &block)
            .tensor("t", &[32], 8, &block)
            .bytes(),
        "t appears twice",
    );
    let mut misaligned = File::default().tensor("t", &[32], 8, &block);
    let at = misaligned.infos.len() - 8;
    misaligned.infos[at..].copy_from_slice(&3u64.to_le_bytes());
    refused(&misaligned.bytes(), "not a multiple of the alignment");
}

#[test]
fn unknown_and_undecoded_types_are_named_skips() {
    let m = load_bytes(
        &File::default()
            .tensor("q1", &[128], 41, &[0; 18])
            .tensor("odd", &[4], 99, &[0; 4])
            .bytes(),
    )
    .unwrap();
    let skipped: Vec<_> = m
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("q1", "ggml type Q1_0 not yet decoded"),
            ("odd", "ggml type id 99 is not a known type")
        ]
    );
}

#[test]
fn qk_rows_undo_the_converters_permutation() {
    assert_eq!(llama_qk_rows(8, 2).unwrap(), [0, 2, 1, 3, 4, 6, 5, 7]);
    assert_eq!(llama_qk_rows(6, 1).unwrap(), [0, 2, 4, 1, 3, 5]);
    assert!(llama_qk_rows(6, 2).is_err());
    assert!(llama_qk_rows(6, 0).is_err());
}

/// A Q8_0 tensor stored with permuted rows against its f32 original: the reordered pair pass
/// gives the change metrics of the rows paired in Hugging Face order (a float64 reference over
/// explicitly unpermuted values), and refuses row orders that are not permutations.
#[test]
fn reordered_pair_matches_a_float64_reference() {
    let (rows, heads, width) = (16, 2, 96);
    let stored_rows = llama_qk_rows(rows, heads).unwrap();
    let mut seed = 7u64;
    let mut code = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 57) as i8 - 64
    };
    let blocks: Vec<u8> = (0..rows * width / 32)
        .flat_map(|b| {
            let codes: Vec<i8> = (0..32).map(|_| code()).collect();
            q8_0_block(0.25 + b as f32 / 64.0, |i| codes[i])
        })
        .collect();
    let q = Tensor::contiguous(
        "q".into(),
        DType::Q8_0,
        vec![rows, width],
        Storage::from_vec(blocks),
    );
    let stored = stats::to_f64(&q, 0, None).unwrap();
    // The original: stored row stored_rows[r] is row r; every 5th value nudged.
    let original: Vec<f64> = (0..rows * width)
        .map(|i| {
            stored[stored_rows[i / width] * width + i % width] + [0.0, 0.5][(i % 5 == 0) as usize]
        })
        .collect();
    let f = Tensor::contiguous(
        "f".into(),
        DType::F32,
        vec![rows, width],
        Storage::from_vec(
            original
                .iter()
                .flat_map(|&x| (x as f32).to_le_bytes())
                .collect(),
        ),
    );
    let order = stats::RowOrder { rows: &stored_rows };
    let ctl = Control::default();
    let (sa, sb, p) = stats::pair_stats_reordered(&f, &q, None, Some(order), 0.0, &ctl).unwrap();
    let unpermuted: Vec<f64> = (0..rows * width)
        .map(|i| stored[stored_rows[i / width] * width + i % width])
        .collect();
    let (mut dot, mut aa, mut bb, mut sd, mut changed) = (0.0, 0.0, 0.0, 0.0, 0);
    for (x, y) in original.iter().zip(&unpermuted) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
        sd += (y - x) * (y - x);
        changed += (x != y) as u64;
    }
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-12 * want.abs();
    assert_eq!((p.numel, p.compared, p.diff_count), (1536, 1536, changed));
    assert!(changed > 0 && p.max_abs_diff == 0.5);
    assert!(close(p.dot, dot) && close(p.sum_sq_a, aa) && close(p.sum_sq_b, bb));
    assert!(close(p.sum_sq_diff, sd));
    // Each side's statistics do not depend on the order.
    let plain = stats::tensor_stats(&q, &ctl).unwrap();
    assert!(close(sb.mean, plain.mean) && close(sb.m2, plain.m2));
    assert_eq!((sb.min, sb.max, sa.numel), (plain.min, plain.max, 1536));
    // Reading the unpermuted side in stored order instead makes nearly everything differ.
    let (_, _, unordered) = stats::pair_stats(&f, &q, 0.0, &ctl).unwrap();
    assert!(unordered.diff_count > changed);
    for bad in [
        vec![0usize; rows],
        (0..rows - 1).collect(),
        (1..=rows).collect(),
    ] {
        let order = Some(stats::RowOrder { rows: &bad });
        let err = stats::pair_stats_reordered(&f, &q, None, order, 0.0, &ctl).unwrap_err();
        assert!(err.to_string().contains("permutation"), "{err}");
    }
}

/// The unquantized GGUF dtypes take the other read paths (f32 through the f32 buffer instead of
/// in place, f16 through the f64 decode): reading stored rows in Hugging Face order gives the
/// same comparison as a tensor written in that order.
#[test]
fn reordered_rows_in_f32_and_f16_match_the_tensor_in_order() {
    let (rows, heads, width) = (8, 2, 20);
    let stored_rows = llama_qk_rows(rows, heads).unwrap();
    let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 8.0;
    let in_order: Vec<f32> = (0..rows * width).map(value).collect();
    let permuted: Vec<f32> = (0..rows * width)
        .map(|i| {
            let hf_row = stored_rows.iter().position(|&s| s == i / width).unwrap();
            value(hf_row * width + i % width)
        })
        .collect();
    let other: Vec<f32> = in_order
        .iter()
        .map(|x| x + 0.25 * (x > &0.0) as u8 as f32)
        .collect();
    let tensor = |dtype: DType, v: &[f32]| {
        let bytes: Vec<u8> = match dtype {
            DType::F16 => v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        Tensor::contiguous(
            "t".into(),
            dtype,
            vec![rows, width],
            Storage::from_vec(bytes),
        )
    };
    let ctl = Control::default();
    for dtype in [DType::F32, DType::F16] {
        let a = tensor(DType::F32, &other);
        let (stored, ordered) = (tensor(dtype, &permuted), tensor(dtype, &in_order));
        let order = Some(stats::RowOrder { rows: &stored_rows });
        let got = stats::pair_stats_reordered(&a, &stored, None, order, 0.0, &ctl).unwrap();
        let want = stats::pair_stats(&a, &ordered, 0.0, &ctl).unwrap();
        assert!(want.2.diff_count > 0 && want.2.diff_count < (rows * width) as u64);
        assert_eq!(got.2.diff_count, want.2.diff_count, "{dtype}");
        assert_eq!(got.2.max_abs_diff, want.2.max_abs_diff, "{dtype}");
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs();
        assert!(close(got.2.dot, want.2.dot) && close(got.2.sum_sq_diff, want.2.sum_sq_diff));
        assert!(
            close(got.1.mean, want.1.mean) && got.1.min == want.1.min,
            "{dtype}"
        );
    }
}
