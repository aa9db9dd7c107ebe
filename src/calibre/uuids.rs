//! calibre's uuids: every book (`books.uuid`) and the library itself (`library_id.uuid`) has a
//! random version-4 uuid, stored in its lowercase hyphenated form (Python's
//! `str(uuid.uuid4())`).

use uuid::Uuid;

/// A new random uuid as calibre stores one.
pub fn uuid4() -> String {
    Uuid::new_v4().hyphenated().to_string()
}

/// True when `u` is a uuid in the form calibre stores (hyphenated, 36 characters; hex digits of
/// either case).
pub fn looks_like_uuid(u: &str) -> bool {
    u.len() == 36 && Uuid::try_parse(u).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid4_is_well_formed() {
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]));
        assert_eq!(u, u.to_lowercase());
        assert_ne!(u, uuid4());
        assert!(looks_like_uuid(&u));
    }

    #[test]
    fn uuids_as_calibre_stores_them() {
        assert!(looks_like_uuid("f1a50026-eb58-43e0-ac12-247f8b70b887"));
        assert!(looks_like_uuid("F1A50026-EB58-43E0-AC12-247F8B70B887"));
        for bad in [
            "",
            "f1a50026eb5843e0ac12247f8b70b887",
            "{f1a50026-eb58-43e0-ac12-247f8b70b887}",
            "f1a50026-eb58-43e0-ac12-247f8b70b88g",
            "f1a50026-eb58-43e0-ac12+247f8b70b887",
            "urn:uuid:f1a50026-eb58-43e0-ac12-247f8b70b887",
        ] {
            assert!(!looks_like_uuid(bad), "{bad:?}");
        }
    }
}
