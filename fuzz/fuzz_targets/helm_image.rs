#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tug_edit_fuzz::helm_image(data);
});
