//! A byte stream with a name and a position, for readers that need only `Read`.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::FileError;

pub(crate) struct Source {
    inner: Box<dyn Read + Send>,
    pub(crate) name: String,
    /// Bytes consumed so far.
    pub(crate) offset: u64,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Source {
    pub(crate) fn new(inner: Box<dyn Read + Send>, name: &str) -> Source {
        Source { inner, name: name.to_owned(), offset: 0 }
    }

    pub(crate) fn io_error(&self, source: io::Error) -> FileError {
        FileError::Io { path: PathBuf::from(&self.name), source }
    }

    /// Fills `buf` as far as the stream goes; returns how many bytes came (less than
    /// `buf.len()` only at the end of the stream).
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> Result<usize, FileError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads exactly `len` bytes into a new vector, growing it as data arrives so a bogus
    /// length costs no more memory than the stream really holds. `Ok(None)` when the stream
    /// ends first.
    pub(crate) fn read_vec(&mut self, len: usize) -> Result<Option<Vec<u8>>, FileError> {
        let mut out = Vec::with_capacity(len.min(1 << 20));
        let mut chunk = [0u8; 16 * 1024];
        while out.len() < len {
            let want = (len - out.len()).min(chunk.len());
            let n = self.fill(&mut chunk[..want])?;
            out.extend_from_slice(&chunk[..n]);
            if n < want {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    pub(crate) fn truncated(&self, what: &'static str, offset: u64) -> FileError {
        FileError::Truncated { name: self.name.clone(), what, offset }
    }

    pub(crate) fn not_format(&self, what: &'static str, reason: impl Into<String>) -> FileError {
        FileError::NotFormat { name: self.name.clone(), what, reason: reason.into() }
    }

    pub(crate) fn malformed(&self, reason: impl Into<String>, offset: u64) -> FileError {
        FileError::Malformed { name: self.name.clone(), reason: reason.into(), offset }
    }

    pub(crate) fn empty(&self) -> FileError {
        FileError::Empty { name: self.name.clone() }
    }
}

/// `Read` for a [`Source`], keeping its offset, for parsers that want a reader.
impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}
