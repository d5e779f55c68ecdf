//! Media files of every format: the first byte picks the format, the rest is the file, read
//! through `MediaReader::from_reader` as a pipe would give it. Nothing may panic, and every
//! sample the reader returns holds data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_mediafile::{Format, MediaReader};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else { return };
    let format = [Format::Ivf, Format::H264, Format::Ogg, Format::Webm][usize::from(pick % 4)];
    let Ok(mut reader) =
        MediaReader::from_reader(Box::new(std::io::Cursor::new(file.to_vec())), format, "fuzz")
    else {
        return;
    };
    let _ = reader.tracks();
    // A file of n bytes holds fewer than n samples; the bound only guards against a loop.
    for _ in 0..=file.len() {
        match reader.next_sample() {
            Ok(Some(sample)) => assert!(!sample.data.is_empty()),
            Ok(None) | Err(_) => break,
        }
    }
});
