//! What a calibre-server holds of the books a migration placed there, for `verify`: each
//! book's formats and their sizes, asked in batches of ids (`/ajax/books`, which gives a book's
//! `format_metadata`), never the files' bytes: the server hands out a copy with the book's
//! metadata written into it, so bytes read back are not the bytes placed. Only read; the
//! library's whole `list` (what `run` reads at open) is not asked.

use super::client::{query_escape, CallError, Client};
use super::library::MARK;
use super::{connect, failure, migration_tag, Credentials, ServerSpec};
use crate::failure::Failure;
use crate::target::http::HttpOptions;
use crate::target::{OpenError, Unusable};
use serde_json::Value;
use std::collections::HashMap;

/// Per book id asked: what the server holds of it, or `None` when the library has no such
/// book.
pub type FormatsOf = HashMap<i64, Option<ServerBook>>;

/// A book as the server has it now.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerBook {
    /// Its formats (upper case, as calibre names them) and their sizes in bytes.
    pub formats: HashMap<String, u64>,
    /// It carries this migration's mark (see `library::MARK`): one it made, not the user's
    /// (with `--merge-formats` a file may be in the user's book) nor another book given the
    /// same id since.
    pub ours: bool,
}

pub struct ServerView {
    client: Client,
    spec: ServerSpec,
    /// The migration's tag, which starts each of its marks.
    tag: String,
}

impl ServerView {
    /// Connect and log in (one small call: reachable, and the user may read).
    pub async fn open(
        spec: &ServerSpec,
        creds: Option<Credentials>,
        opts: &HttpOptions,
        migration_key: &str,
    ) -> Result<ServerView, OpenError> {
        let view = ServerView {
            client: connect(spec, creds, opts)?,
            spec: spec.clone(),
            tag: migration_tag(migration_key),
        };
        match view.client.get_json(&view.path(&[0])).await {
            Ok(_) => Ok(view),
            Err(CallError::Auth(a)) => Err(OpenError::CalibreServerAuth(a)),
            Err(e) => Err(Unusable::Server(view.failure(e)).into()),
        }
    }

    /// The formats and sizes of the books `ids`.
    pub async fn formats(&self, ids: &[i64]) -> Result<FormatsOf, Failure> {
        let reply = self
            .client
            .get_json(&self.path(ids))
            .await
            .map_err(|e| self.failure(e))?;
        parse(&reply, ids, &self.tag).ok_or_else(|| {
            Failure::new(
                crate::failure::FailureKind::BadServer,
                format!("{}: the books' metadata is not calibre's", self.spec),
            )
        })
    }

    fn path(&self, ids: &[i64]) -> String {
        let library = self
            .spec
            .library_id
            .as_deref()
            .map(|l| format!("/{}", query_escape(l)))
            .unwrap_or_default();
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!(
            "/ajax/books{library}?ids={}&category_urls=false",
            ids.join(",")
        )
    }

    fn failure(&self, e: CallError) -> Failure {
        failure(e, &self.spec.to_spec(), Some(self.client.retries()))
    }
}

/// `/ajax/books`' reply (`{"<id>": null | {"format_metadata": {"epub": {"size": …}, …},
/// "identifiers": {…}, …}}`) for `ids`, marks told by `tag`; `None` when it is not that.
fn parse(reply: &Value, ids: &[i64], tag: &str) -> Option<FormatsOf> {
    let books = reply.as_object()?;
    let mut out = FormatsOf::new();
    for id in ids {
        let formats = match books.get(&id.to_string()) {
            None | Some(Value::Null) => None,
            Some(book) => {
                let meta = book.get("format_metadata")?.as_object()?;
                let mut sizes = HashMap::new();
                for (fmt, m) in meta {
                    sizes.insert(fmt.to_uppercase(), m.get("size")?.as_u64()?);
                }
                let mark = book
                    .get("identifiers")
                    .and_then(|i| i.get(MARK))
                    .and_then(Value::as_str);
                Some(ServerBook {
                    formats: sizes,
                    ours: mark.is_some_and(|m| m.to_lowercase().starts_with(tag)),
                })
            }
        };
        out.insert(*id, formats);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_gives_each_books_formats_and_sizes_and_none_for_a_book_that_is_gone() {
        let reply = json!({
            "3": {"title": "Dune", "format_metadata": {
                "epub": {"size": 1234, "mtime": "2026-12-03T10:00:00+00:00"},
                "pdf": {"size": 99}
            }, "identifiers": {"bookferry": "AB12cd34", "isbn": "1"}},
            "6": {"format_metadata": {}, "identifiers": {"bookferry": "ffff0000"}},
            "4": null
        });
        let got = parse(&reply, &[3, 4, 5, 6], "ab12").unwrap();
        assert_eq!(
            got[&3],
            Some(ServerBook {
                formats: HashMap::from([("EPUB".into(), 1234), ("PDF".into(), 99)]),
                ours: true
            })
        );
        assert_eq!(got[&4], None);
        assert_eq!(got[&5], None);
        assert!(!got[&6].as_ref().unwrap().ours, "another migration's mark");
        // Not calibre's: a book without its format_metadata, or a size that is not a number.
        assert!(parse(&json!({"3": {"title": "x"}}), &[3], "ab12").is_none());
        let bad_size = json!({"3": {"format_metadata": {"epub": {"size": "1"}}}});
        assert!(parse(&bad_size, &[3], "ab12").is_none());
        assert!(parse(&json!([1, 2]), &[3], "ab12").is_none());
    }
}
