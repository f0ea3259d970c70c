//! A1111's short model hash, written as `Model hash` in the PNG's parameters:
//! the first 10 hex digits of the SHA-256 of the checkpoint file
//! (modules/hashes.py `sha256` in AUTOMATIC1111's web UI, the "AutoV2" hash
//! that Civitai lists beside every model).
//!
//! A diffusers folder has no single checkpoint file; easel defines its hash over
//! the UNet's weights: the SHA-256 of `unet/`'s weight file, or of its shards
//! concatenated in the index's order (the files [`weight_files`] picks, the ones
//! the UNet is loaded from). For a one-file UNet this is what `sha256sum`
//! prints for that file, cut to 10 digits. The file is streamed, never held in
//! memory, and read once per load.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{stream_file, weight_files};
use crate::error::Result;

/// Hex digits A1111 keeps of the SHA-256.
pub const SHORT_HASH_DIGITS: usize = 10;

/// A1111's short hash of the files, read in order as one stream.
pub fn short_hash(files: &[impl AsRef<Path>]) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        stream_file(file.as_ref(), |chunk| hasher.update(chunk))?;
    }
    Ok(hex(&hasher.finalize())[..SHORT_HASH_DIGITS].to_string())
}

/// Bytes as lowercase hex digits, as `sha256sum` and A1111 write hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The model hash of a diffusers folder: [`short_hash`] of its UNet's weight files.
pub fn unet_hash(model_dir: &Path) -> Result<String> {
    short_hash(&weight_files(&model_dir.join("unet"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_sha256s_first_ten_digits() {
        let dir = std::env::temp_dir().join(format!("easel-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"ab").unwrap();
        std::fs::write(&b, b"c").unwrap();
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(short_hash(&[&a, &b]).unwrap(), "ba7816bf8f");
        // A file of more than one read: sha256 of 3 MiB of zeros.
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
        let want = format!("{:x}", Sha256::digest(vec![0u8; 3 << 20]));
        assert_eq!(short_hash(&[&big]).unwrap(), want[..10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
