//! Flash access with READ_SIZE alignment.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Reads `out.len()` bytes at any address, honouring READ_SIZE alignment with a bounce
    /// buffer where needed.
    pub(super) async fn read(&mut self, addr: u32, out: &mut [u8]) -> Res<(), F> {
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

    /// Whether `[from, end)` of page `p` reads as erased.
    pub(super) async fn is_blank(&mut self, p: u16, from: u32) -> Res<bool, F> {
        let mut buf = [0u8; 64];
        let mut off = from;
        while off < page_size::<F>() {
            let n = (page_size::<F>() - off).min(64) as usize;
            self.read(Self::addr(p, off), &mut buf[..n]).await?;
            if buf[..n].iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            off += n as u32;
        }
        Ok(true)
    }
}
