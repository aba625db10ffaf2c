//! A flash wrapper for tests that watches what the store does to the flash: every error the
//! flash returned (also those the store handled itself), every access outside the flash, and
//! the kind of every mutating call, in order.

use embedded_storage_async::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use mqtt_persist::flash::SimFlashError;

/// A flash call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Erase,
}

/// Forwards every call to `inner` and records what happened.
pub struct Checked<F> {
    pub inner: F,
    /// Every error the flash returned: call, offset, length, error.
    pub errors: Vec<(Op, u32, usize, SimFlashError)>,
    /// Calls whose range does not lie within the flash (checked here, before forwarding).
    pub out_of_range: Vec<(Op, u32, usize)>,
    /// The kind of every write and erase call, in order, and whether it returned `Ok`.
    pub mutations: Vec<(Op, bool)>,
}

impl<F: ReadNorFlash> Checked<F> {
    pub fn new(inner: F) -> Self {
        Checked {
            inner,
            errors: Vec::new(),
            out_of_range: Vec::new(),
            mutations: Vec::new(),
        }
    }

    fn check(&mut self, op: Op, offset: u32, len: usize) {
        if offset as u64 + len as u64 > self.inner.capacity() as u64 {
            self.out_of_range.push((op, offset, len));
        }
    }

    fn note(&mut self, op: Op, offset: u32, len: usize, r: &Result<(), SimFlashError>) {
        if let Err(e) = r {
            self.errors.push((op, offset, len, *e));
        }
        if op != Op::Read {
            self.mutations.push((op, r.is_ok()));
        }
    }

    /// Accesses out of bounds or misaligned, as seen by the wrapper or reported by the flash.
    pub fn bad_accesses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .out_of_range
            .iter()
            .map(|(op, off, len)| format!("{op:?} of {len} bytes at {off:#x} beyond the flash"))
            .collect();
        out.extend(
            self.errors
                .iter()
                .filter(|e| matches!(e.3, SimFlashError::OutOfBounds | SimFlashError::NotAligned))
                .map(|(op, off, len, e)| format!("{op:?} of {len} bytes at {off:#x}: {e:?}")),
        );
        out
    }
}

impl<F: ErrorType<Error = SimFlashError>> ErrorType for Checked<F> {
    type Error = SimFlashError;
}

impl<F: ReadNorFlash + ErrorType<Error = SimFlashError>> ReadNorFlash for Checked<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        self.check(Op::Read, offset, bytes.len());
        let r = self.inner.read(offset, bytes).await;
        self.note(Op::Read, offset, bytes.len(), &r);
        r
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<F: NorFlash + ErrorType<Error = SimFlashError>> NorFlash for Checked<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
        let len = to.saturating_sub(from) as usize;
        self.check(Op::Erase, from, len);
        let r = self.inner.erase(from, to).await;
        self.note(Op::Erase, from, len, &r);
        r
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        self.check(Op::Write, offset, bytes.len());
        let r = self.inner.write(offset, bytes).await;
        self.note(Op::Write, offset, bytes.len(), &r);
        r
    }
}
