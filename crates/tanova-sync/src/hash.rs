//! Checksums: streamed SHA-256 of a file, refusing a file that changes while it is read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::scan::stamp_of;
use crate::state::FileStamp;

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file is not the version that was found: it is still being written, or was replaced.
    #[error("file changed while being read")]
    Changed,
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// Lowercase hex, as the API and the state spell a checksum. (`hex::encode`
/// builds its string a character at a time: a twentieth of a no-op restart,
/// which spells every cached checksum.)
pub fn to_hex(bytes: &[u8]) -> String {
    let mut digits = vec![0; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut digits).expect("twice as long");
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// Hash the file at `path`, reading into `buf`, if the open file still has
/// `expected`'s stamp (identity, size, mtime) before and after reading; the
/// bytes hashed are then the version found (the settle check's first look;
/// see `engine::Inner::settle`). The identity counts too: a file replaced
/// under the same name is a new version.
fn hash_file(path: &Path, expected: &FileStamp, buf: &mut [u8]) -> Result<String, HashError> {
    let mut file = open_as(path, expected)?;
    let (digest, total) = digest_of(&mut file, buf)?;
    if total != expected.size || !is_as(path, &file, expected)? {
        return Err(HashError::Changed);
    }
    Ok(digest)
}

/// Read a small file whole, if the open file has `expected`'s stamp and its
/// first `expected.size` bytes are the ones `checksum` names: the bytes of
/// the version hashed, to send from memory (`deliver::look_again`). Reads no
/// further than that size: a file that grew since is read as hashed.
pub fn read_as_hashed(
    path: &Path,
    expected: &FileStamp,
    checksum: &str,
) -> Result<Vec<u8>, HashError> {
    let file = open_as(path, expected)?;
    let mut bytes = Vec::with_capacity(expected.size as usize);
    file.take(expected.size).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != expected.size || sha256_hex(&bytes) != checksum {
        return Err(HashError::Changed);
    }
    Ok(bytes)
}

/// Open `path`, if what opens is the version `expected` describes.
fn open_as(path: &Path, expected: &FileStamp) -> Result<File, HashError> {
    let file = File::open(path)?;
    if !is_as(path, &file, expected)? {
        return Err(HashError::Changed);
    }
    Ok(file)
}

/// Whether the open file still has `expected`'s stamp.
fn is_as(path: &Path, file: &File, expected: &FileStamp) -> io::Result<bool> {
    Ok(stamp_of(path, &file.metadata()?) == *expected)
}

/// Bytes read at a time: large enough that the read calls vanish from the
/// profile next to the hashing (most CVs take one or two).
const READ_SIZE: usize = 256 * 1024;

/// Read buffers kept between files, one per concurrent hash: allocated per
/// file, a buffer this size is an mmap, 64 page faults and an munmap; kept
/// per thread, one per blocking thread tokio ever started.
#[derive(Default)]
pub struct ReadBuffers(Mutex<Vec<Box<[u8]>>>);

impl ReadBuffers {
    /// Hash a file (see `hash_file`) with a kept buffer.
    pub fn hash_file(&self, path: &Path, expected: &FileStamp) -> Result<String, HashError> {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = taken.unwrap_or_else(|| vec![0; READ_SIZE].into_boxed_slice());
        let result = hash_file(path, expected, &mut buf);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
        result
    }
}

/// The hex SHA-256 of everything `reader` gives, and how many bytes that was.
fn digest_of(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((to_hex(&hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_digest() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_a_file_and_notices_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cv.txt");
        std::fs::write(&path, b"abc").unwrap();
        let stamp = stamp_of(&path, &std::fs::metadata(&path).unwrap());
        let buffers = ReadBuffers::default();
        assert_eq!(
            buffers.hash_file(&path, &stamp).unwrap(),
            sha256_hex(b"abc")
        );
        std::fs::write(&path, b"abcd").unwrap();
        assert!(matches!(
            buffers.hash_file(&path, &stamp),
            Err(HashError::Changed)
        ));
    }
}
