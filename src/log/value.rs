//! Reading values: fragments in order, each CRC checked.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Fills `out` from a source; returns the bytes produced (fewer only at the source's end).
    /// A fragment whose CRC does not match gives [`Error::Corrupted`].
    pub async fn pull(&mut self, src: &mut Source<'_>, out: &mut [u8]) -> Res<usize, F> {
        match src {
            Source::Ram { parts, idx, pos } => {
                let mut done = 0;
                while done < out.len() && *idx < parts.len() {
                    let part = parts[*idx];
                    let take = (part.len() - *pos).min(out.len() - done);
                    out[done..done + take].copy_from_slice(&part[*pos..*pos + take]);
                    done += take;
                    *pos += take;
                    if *pos == part.len() {
                        *idx += 1;
                        *pos = 0;
                    }
                }
                Ok(done)
            }
            Source::Flash(chain) => {
                let mut done = 0;
                while done < out.len() && !chain.done {
                    let flen = chain.tag.data_len() as u32;
                    if chain.pos == flen {
                        self.finish_fragment(chain).await?;
                        continue;
                    }
                    let take = ((flen - chain.pos) as usize).min(out.len() - done);
                    let at = Self::addr(chain.page, chain.frag_off + TAG_LEN as u32 + chain.pos);
                    self.read(at, &mut out[done..done + take]).await?;
                    chain.crc_state = crc_update(chain.crc_state, &out[done..done + take]);
                    chain.pos += take as u32;
                    done += take;
                }
                Ok(done)
            }
        }
    }

    /// Checks the CRC of the fragment just read and steps to the next one.
    pub(super) async fn finish_fragment(&mut self, chain: &mut Chain) -> Res<(), F> {
        let flen = chain.tag.data_len() as u32;
        let stored = self
            .read_u32(Self::addr(chain.page, chain.frag_off + TAG_LEN as u32 + flen))
            .await?;
        if stored != crc_final(chain.crc_state) {
            return Err(Error::Corrupted);
        }
        if !chain.tag.more {
            chain.done = true;
            return Ok(());
        }
        let end = chain.frag_off + stored_len(flen as usize, ws::<F>()) as u32;
        let Some((p, off, word)) = self.next_fragment_at(chain.page, end).await? else {
            return Err(Error::Corrupted);
        };
        let expect = if chain.tag.ty == RecordType::Cont {
            chain.tag.id_low.wrapping_add(1)
        } else {
            1
        };
        let tag = match Tag::decode(word) {
            Ok(t) if t.ty == RecordType::Cont && t.id_low == expect => t,
            _ => return Err(Error::Corrupted),
        };
        if !self.fits(p, off, stored_len(tag.data_len(), ws::<F>()) as u32) {
            return Err(Error::Corrupted);
        }
        *chain = Chain::start(p, off, tag, &Binding::NONE);
        Ok(())
    }
}
