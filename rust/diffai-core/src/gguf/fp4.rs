//! 4-bit floats (E2M1) with a shared scale: MXFP4 (32 values, E8M0 power-of-two scale, as in
//! gpt-oss) and NVFP4 (64 values in 4 sub-blocks of 16, each with an unsigned E4M3 scale).
//! ggml stores the E2M1 values doubled and halves the scale instead.

block_codec!(MXFP4, mxfp4, 32, 17);
block_codec!(NVFP4, nvfp4, 64, 36);

/// E2M1 codes, doubled (ggml's `kvalues_mxfp4`).
const E2M1_X2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of 2^(e - 127) (`ggml_e8m0_to_fp32_half`): subnormal for e < 2.
fn e8m0_half(e: u8) -> f32 {
    f32::from_bits(if e < 2 {
        0x0020_0000 << e
    } else {
        ((e - 1) as u32) << 23
    })
}

/// Half of an unsigned E4M3 scale (bias 7); 0 and 0x7F (NaN) read as 0, as in ggml.
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let (exp, man) = ((x >> 3) & 0x0F, (x & 7) as f32);
    let v = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp as i32 - 7)
    };
    v * 0.5
}

/// Byte j of `qs` holds value j in its low nibble and value j + qs.len() in its high nibble.
#[inline(always)]
fn e2m1_pairs(d: f32, qs: &[u8], out: &mut [f32]) {
    let n = qs.len();
    for (j, &q) in qs.iter().enumerate() {
        out[j] = d * E2M1_X2[(q & 0x0F) as usize] as f32;
        out[j + n] = d * E2M1_X2[(q >> 4) as usize] as f32;
    }
}

#[inline(always)]
fn mxfp4(b: &[u8; 17], out: &mut [f32; 32]) {
    e2m1_pairs(e8m0_half(b[0]), &b[1..], out);
}

#[inline(always)]
fn nvfp4(b: &[u8; 36], out: &mut [f32; 64]) {
    for (s, sub) in out.chunks_exact_mut(16).enumerate() {
        e2m1_pairs(ue4m3_half(b[s]), &b[4 + 8 * s..12 + 8 * s], sub);
    }
}
