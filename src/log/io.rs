//! Flash access with READ_SIZE alignment.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Reads `out.len()` bytes at any address, honouring READ_SIZE alignment with a bounce
    /// buffer where needed.
    pub(super) async fn read(&mut self, addr: u32, out: &mut [u8]) -> Res<(), F> {
        // Every offset read from flash is checked before it is used: an access outside the
        // flash is a bug of the store, never the flash's business.
        if (addr as usize)
            .checked_add(out.len())
            .is_none_or(|e| e > N * F::ERASE_SIZE)
        {
            debug_assert!(false, "read of {} bytes at {addr:#x} outside the flash", out.len());
            return Err(Error::LogicBug);
        }
        let rs = F::READ_SIZE as u32;
        if addr.is_multiple_of(rs) && (out.len() as u32).is_multiple_of(rs) {
            return self.flash.read(addr, out).await.map_err(Error::Flash);
        }
        let mut buf = [0u8; 64];
        let mut done = 0usize;
        while done < out.len() {
            let a = addr + done as u32;
            let base = a - a % rs;
            let skip = (a - base) as usize;
            let want = out.len() - done;
            let n = round_up(skip + want, rs as usize).min(64);
            self.flash.read(base, &mut buf[..n]).await.map_err(Error::Flash)?;
            let take = (n - skip).min(want);
            out[done..done + take].copy_from_slice(&buf[skip..skip + take]);
            done += take;
        }
        Ok(())
    }

    /// [`Self::read`] for code that interprets what it reads: a read the flash refuses (on ECC
    /// flash, a word an interrupted program or erase left with inconsistent ECC reads as an
    /// error until its page is erased) is `Ok(false)`, and the caller treats those bytes as
    /// garbage. Errors of the store itself still propagate.
    ///
    /// Only a refusal local to those bytes is garbage: if the flash refuses the probe of
    /// [`Self::flash_answers`] too (a bus fault, a driver error, power gone), the error is
    /// returned, so a failing flash never reads as a store with fewer keys (DESIGN.md
    /// section 7).
    pub(super) async fn read_ok(&mut self, addr: u32, out: &mut [u8]) -> Res<bool, F> {
        match self.read(addr, out).await {
            Ok(()) => Ok(true),
            Err(Error::Flash(e)) => {
                if self.flash_answers(addr).await {
                    Ok(false)
                } else {
                    Err(Error::Flash(e))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the flash still serves reads elsewhere after refusing one at `addr`: the first
    /// READ_SIZE (at least 4) bytes of the header of `addr`'s page (unless `addr` is in that
    /// header), else of any other page. An ECC error is local to the word an interrupted write
    /// or erase left; a flash that refuses every page is failing as a whole. Only runs after a
    /// refused read.
    async fn flash_answers(&mut self, addr: u32) -> bool {
        let page = page_size::<F>();
        let own = (addr / page) as u16;
        let in_header = addr % page < PAGE_HEADER_LEN as u32;
        // READ_SIZE is at most 32 (check_geometry).
        let mut b = [0u8; 32];
        let n = F::READ_SIZE.clamp(4, 32);
        for k in 0..N as u16 {
            let p = (own + k) % N as u16;
            if k == 0 && in_header {
                continue;
            }
            if self.flash.read(Self::addr(p, 0), &mut b[..n]).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// A word read with [`Self::read_ok`]: `None` if unreadable.
    pub(super) async fn word_ok(&mut self, addr: u32) -> Res<Option<u32>, F> {
        let mut b = [0u8; 4];
        Ok(self.read_ok(addr, &mut b).await?.then(|| u32::from_le_bytes(b)))
    }

    /// A page header, unreadable ones as garbage.
    pub(super) async fn header_ok(&mut self, p: u16) -> Res<HeaderState, F> {
        let mut b = [0u8; PAGE_HEADER_LEN];
        if self.read_ok(Self::addr(p, 0), &mut b).await? {
            Ok(PageHeader::decode(&b))
        } else {
            Ok(HeaderState::Garbage)
        }
    }

    pub(super) async fn read_u32(&mut self, addr: u32) -> Res<u32, F> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).await?;
        Ok(u32::from_le_bytes(b))
    }

    pub(super) async fn read_header(&mut self, p: u16) -> Res<HeaderState, F> {
        let mut b = [0u8; PAGE_HEADER_LEN];
        self.read(Self::addr(p, 0), &mut b).await?;
        Ok(PageHeader::decode(&b))
    }

    /// Whether `[from, end)` of page `p` reads as erased (an unreadable word does not).
    pub(super) async fn is_blank(&mut self, p: u16, from: u32) -> Res<bool, F> {
        let mut buf = [0u8; 64];
        let mut off = from;
        while off < page_size::<F>() {
            let n = (page_size::<F>() - off).min(64) as usize;
            if !self.read_ok(Self::addr(p, off), &mut buf[..n]).await? || buf[..n].iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            off += n as u32;
        }
        Ok(true)
    }
}
