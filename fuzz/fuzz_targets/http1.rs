//! Arbitrary bytes through every reader of Fulcrum's HTTP/1 codec: heads (request and
//! response) and chunked bodies, whole and split, checking that nothing panics, loops or grows
//! without bound, and that a split never changes the outcome.
//!
//!     cargo fuzz run http1          # from the repository root (cargo-fuzz; nightly, or
//!                                   # RUSTC_BOOTSTRAP=1 with the stable toolchain)

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulcrum::fuzz_http1(data);
});
