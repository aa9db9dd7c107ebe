//! The cover a file brings to a book made over the server: exactly the `cover.jpg` the direct
//! calibre target writes ([`cover_of`]: a calibre source book's own, else the one calibre
//! makes from the file), made on a blocking thread and sent with the book's `add empty` call
//! (calibre's `Metadata.cover_data`, base64 in JSON as calibre's JSON encoder writes it). calibre-server
//! stores a JPEG as it is (`save_cover_data_to` changes nothing in a JPEG without
//! transparency within `maximum_cover_size`, 1650×2200 by default; a larger one it shrinks).
//! A file whose cover cannot be made is added without one, with a one-line warning naming it.

use crate::target::calibre::{cover_of, NoCover};
use crate::target::Payload;

/// The JPEG cover of the book `p` begins (`None`: it has none, or it cannot be made: warned).
pub async fn cover_for(p: &Payload) -> Option<Vec<u8>> {
    let p = p.clone();
    let rel = p.source_rel.clone();
    let made = tokio::task::spawn_blocking(move || made_from_source(&p)).await;
    match made {
        Ok(Ok(jpeg)) => jpeg,
        Ok(Err(e)) => {
            tracing::warn!("{rel}: added without a cover: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("{rel}: added without a cover: the cover task failed: {e}");
            None
        }
    }
}

/// The cover from the source file itself (nothing was written into the target to read).
fn made_from_source(p: &Payload) -> Result<Option<Vec<u8>>, NoCover> {
    cover_of(p, &p.source_path)
}
