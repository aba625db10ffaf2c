//! Mount: the geometry check, reading every header and the head page, rebuilding the RAM summary.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Checks the geometry the crate supports (README "Geometry", `docs/DESIGN.md` section 2):
    /// the first rule broken, if any.
    pub fn check_geometry(flash: &F) -> Result<(), GeometryError> {
        let page = F::ERASE_SIZE;
        let pow2_32 = |x: usize| x.is_power_of_two() && x <= 32;
        if !pow2_32(F::READ_SIZE) {
            return Err(GeometryError::ReadSize {
                read_size: F::READ_SIZE,
            });
        }
        if !pow2_32(F::WRITE_SIZE) {
            return Err(GeometryError::WriteSize {
                write_size: F::WRITE_SIZE,
            });
        }
        if !(256..=128 * 1024).contains(&page) || page % 32 != 0 {
            return Err(GeometryError::PageSize { page_size: page });
        }
        if !(4..=4096).contains(&N) {
            return Err(GeometryError::PageCount { pages: N });
        }
        if flash.capacity() != N * page {
            return Err(GeometryError::Capacity {
                flash_bytes: flash.capacity(),
                expected: N * page,
                page_size: page,
            });
        }
        Ok(())
    }

    /// Reads every page header and the head page, and rebuilds the RAM summary. Writes
    /// nothing: a power cut during mount changes nothing.
    pub async fn mount(mut flash: F, max_value: u32) -> Result<Self, (F, Error<F::Error>)> {
        if let Err(g) = Self::check_geometry(&flash) {
            return Err((flash, Error::BadGeometry(g)));
        }
        if Self::max_value_limit() == 0 {
            return Err((flash, Error::BadGeometry(GeometryError::NoRoom)));
        }
        if max_value > Self::max_value_limit() {
            let g = GeometryError::ValueTooLarge {
                max_value_len: max_value as usize,
                limit: Self::max_value_limit() as usize,
            };
            return Err((flash, Error::BadGeometry(g)));
        }
        let _ = &mut flash;
        let mut log = Log {
            flash,
            pages: [PageInfo::FREE; N],
            head: (N - 1) as u16,
            len: 0,
            head_seq: 0,
            head_off: page_size::<F>(),
            head_checked: false,
            head_ctx: Ctx {
                ns: 0,
                hi_c: 0,
                hi_q: 0,
                origin: None,
            },
            head_puts: 0,
            erase_max: 0,
            pending: [Key::sent(0); BATCH],
            pending_len: 0,
            pending_ns: 0,
            max_value,
            max_live_len: 0,
            cap: 0,
            keep: 0,
            report: MountReport::default(),
            prev_torn: false,
            in_flight: false,
            head_bare: false,
            head_guess: 0,
            head_end: 0,
            head_plan: None,
            head_prev_torn: false,
            op_sound: false,
            recent: [(0, RECENT_EMPTY); RECENT],
            recent_next: 0,
            recent_ns: 0,
            log_ns: None,
            moves: 0,
            cursors: [None; KEY_CURSORS],
            cursor_uses: 0,
            maint_steps: 0,
        };
        match log.mount_inner().await {
            Ok(()) => Ok(log),
            Err(e) => Err((log.flash, e)),
        }
    }

    pub(super) async fn mount_inner(&mut self) -> Res<(), F> {
        let mut newest: Option<(u16, PageHeader)> = None;
        let mut unreadable = (0u32, None);
        for p in 0..N as u16 {
            // A header that cannot be read (ECC flash after a cut during its write or during
            // the page's erase) is garbage; only a flash that reads no header at all fails.
            let h = match self.read_header(p).await {
                Ok(h) => h,
                Err(Error::Flash(e)) => {
                    unreadable = (unreadable.0 + 1, Some(e));
                    HeaderState::Garbage
                }
                Err(e) => return Err(e),
            };
            match h {
                HeaderState::Erased => self.pages[p as usize].flags = 0,
                HeaderState::Garbage => self.pages[p as usize].flags = F_DIRTY,
                HeaderState::UnknownVersion(found) => return Err(Error::UnsupportedVersion { found }),
                HeaderState::Valid(h) => {
                    self.pages[p as usize].flags = F_DIRTY;
                    self.erase_max = self.erase_max.max(h.erase_count);
                    if newest.is_none_or(|(_, n)| h.seq > n.seq) {
                        newest = Some((p, h));
                    }
                }
            }
        }
        if let (n, Some(e)) = unreadable
            && n as usize == N
        {
            return Err(Error::Flash(e));
        }
        let Some((head, hh)) = newest else {
            // The first page opened may hold a torn header that reads erased (words programmed
            // without a visible trace): erase it before use.
            self.pages[0].flags = F_DIRTY;
            self.set_model();
            return Ok(());
        };
        self.head = head;
        self.head_seq = hh.seq;

        // The head page first, reading data to check CRCs: only its end can be torn. Its Retire
        // records and header bound the log; everything older than the tail is garbage.
        // Scanned as a torn page: every CRC checked, garbage skipped up to a Sync record.
        self.pages[head as usize] = PageInfo {
            flags: F_TORN,
            ..PageInfo::FREE
        };
        let mut c = self.cursor(head, hh, page_size::<F>());
        let mut retired = hh.tail_seq;
        self.head_bare = true;
        self.head_prev_torn = hh.prev_torn;
        while let Some(e) = self.next_entry(&mut c).await? {
            if let RecordType::Retire = e.tag.ty {
                retired = retired.max(le32(&e.aux).saturating_add(1));
            }
            self.head_bare &= e.tag.ty.is_context();
            self.summarize(head, &e);
        }
        self.report.torn_tail = c.torn_end;
        self.pages[head as usize].damage = c.damage;
        if c.skipped {
            // Garbage from an earlier session sits in the head page: whichever session leaves
            // it must say so in the next page header.
            self.prev_torn = true;
        } else {
            self.pages[head as usize].flags &= !F_TORN;
        }
        self.head_off = c.off;
        self.head_end = c.off;
        // The origin rebuilt, not copied: a plain copy of the context here becomes a `memmove`
        // call on thumbv7em (see `no_memmove`).
        self.head_ctx = Ctx {
            origin: rebuilt_origin(c.ctx.origin),
            ..c.ctx
        };
        self.head_puts = c.puts;
        let tail_seq = retired.min(hh.seq).max(hh.seq.saturating_sub(N as u32 - 1));
        self.len = (hh.seq - tail_seq + 1) as u16;

        // Older log pages, oldest first, tags only. Headers are read again rather than kept
        // from the first pass, so mount needs no per-page stack array; each page's successor
        // header (read one step ahead) says whether the page ended torn.
        let valid = |h: HeaderState| match h {
            HeaderState::Valid(h) => Some(h),
            _ => None,
        };
        let mut next_h = if self.len > 1 {
            valid(self.header_ok(self.ring_back(head, self.len - 1)).await?)
        } else {
            None
        };
        for d in (1..self.len).rev() {
            let p = self.ring_back(head, d);
            let expect = hh.seq - d as u32;
            let this_h = next_h;
            next_h = if d == 1 {
                Some(hh)
            } else {
                valid(self.header_ok(self.ring_back(head, d - 1)).await?)
            };
            let Some(h) = this_h.filter(|h| h.seq == expect) else {
                // The ring position after the head without a valid header: a page the head
                // retracted (append.rs) and erased, which the header of this head may still
                // count in the log. It held nothing that decides anything; not damage.
                if d as usize != N - 1 || this_h.is_some() {
                    self.report.damaged_pages += 1;
                }
                self.pages[p as usize] = PageInfo::FREE;
                continue;
            };
            let torn = next_h.is_some_and(|s| s.seq == expect + 1 && s.prev_torn);
            self.pages[p as usize] = PageInfo {
                flags: if torn { F_TORN } else { 0 },
                ..PageInfo::FREE
            };
            let mut c = self.cursor(p, h, page_size::<F>());
            while let Some(e) = self.next_entry(&mut c).await? {
                self.summarize(p, &e);
            }
            // A torn page's rest, after its last record, is damage too (open_page charges it
            // alike when the page stops being the head).
            self.pages[p as usize].damage = c.damage + if torn { page_size::<F>() - c.off } else { 0 };
            if c.damaged && !torn {
                self.report.damaged_records += 1;
            }
        }
        self.report.log_pages = self.len as u32;
        // What the first write will do with the rest of the head page, planned now (reads
        // only) so that the damage it finds is charged from the start. Giving back a head page
        // of nothing but context changes RAM only, so it is done now.
        let plan = self.plan_head().await?;
        if plan == HeadPlan::Retract {
            self.retract_head();
        } else {
            self.head_guess = self.plan_damage(plan);
            self.pages[head as usize].damage += self.head_guess;
            self.head_plan = Some(plan);
        }
        // The page the head opens next may hold a header write torn without a visible trace
        // (ECC flash counts such words as programmed): it is erased before use, whatever it
        // reads (DESIGN.md section 12, I1).
        let next = Self::next_page(head);
        if self.age(next).is_none() {
            self.pages[next as usize].flags |= F_DIRTY;
        }
        // Exact live charges from the start: every put is looked up once.
        self.refine().await
    }

    /// Adds one scanned record to its page's summary (key range, context bytes, flags); live
    /// charges come from [`Self::refine`].
    pub(super) fn summarize(&mut self, p: u16, e: &Entry) {
        let stored = stored_len(e.tag.data_len(), ws::<F>()) as u32;
        if matches!(
            e.tag.ty,
            RecordType::Put(_) | RecordType::Tombstone | RecordType::Batch | RecordType::Clear
        ) {
            self.note_ns(e.ns);
        }
        let info = &mut self.pages[p as usize];
        match e.tag.ty {
            RecordType::Put(kind) => {
                let id = e.key.map_or(0, |k| k.id());
                info.note_in(e.ns, kind, id, id);
            }
            RecordType::Tombstone => {
                if let Some(k) = e.key {
                    info.note_in(e.ns, k.kind(), k.id(), k.id());
                }
            }
            RecordType::Batch => {
                if let (Some(kind), true) = (e.tag.kind(), e.span > 0) {
                    let base = le32(&e.aux[0..4]);
                    info.note_in(e.ns, kind, base, base.saturating_add(e.span - 1));
                }
            }
            RecordType::Clear => info.flags |= F_CLEAR,
            RecordType::Origin => {
                info.flags |= F_MOVED;
                info.ctx = info.ctx.saturating_add(stored as u16);
            }
            RecordType::Namespace | RecordType::IdHigh => info.ctx = info.ctx.saturating_add(stored as u16),
            _ => {}
        }
    }
}
