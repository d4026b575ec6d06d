#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mu_protocols::fuzz_logic::rewriter(data);
});
