#![no_main]
//! Fuzz target: `diffai_core::pytorch::load_zip_bytes`, then statistics of every tensor it read.

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::read_and_compute(data, diffai_core::pytorch::load_zip_bytes);
});
