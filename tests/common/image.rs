//! Images written by earlier format versions, brought to the current one for tests.

use mqtt_persist::codec::{Binding, CRC, FORMAT_VERSION, PAGE_MAGIC, le32, record_crc, walk_page};

/// Converts an image of format version 1 (record CRCs over tag and data only) to the current
/// version (record CRCs also over the binding, SPEC section 4; alignment to
/// `max(READ_SIZE, WRITE_SIZE)`, the same as version 1's WRITE_SIZE for the images converted
/// here, all with READ_SIZE <= WRITE_SIZE), page by page: a page whose header is a valid
/// version-1 header gets the current version and a new header CRC, and every record whose
/// version-1 CRC holds gets the current CRC for the context it is read in. Everything else
/// (torn words, garbage, damage) is left as it is, so the image fails where it failed before.
pub fn upgrade_v1(img: &mut [u8], page: usize, write_size: usize) {
    for pg in img.chunks_mut(page) {
        let valid_v1 = le32(&pg[0..4]) == PAGE_MAGIC && le32(&pg[28..32]) == CRC.checksum(&pg[0..28]) && pg[4] == 1;
        if !valid_v1 {
            continue;
        }
        pg[4] = FORMAT_VERSION;
        let crc = CRC.checksum(&pg[0..28]);
        pg[28..32].copy_from_slice(&crc.to_le_bytes());
        walk_page(pg, write_size, |pg, off, tag, binding| {
            let len = tag.data_len();
            let word = tag.encode();
            let at = off + 4 + len;
            if le32(&pg[at..at + 4]) != record_crc(&Binding::NONE, word, &[&pg[off + 4..at]]) {
                return false;
            }
            let crc = record_crc(binding, word, &[&pg[off + 4..at]]);
            pg[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            true
        });
    }
}
