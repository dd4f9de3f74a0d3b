//! The shared classifier: [`classify`] behind a bounded cache keyed by the exact text, and
//! by shape (the text without its literal values).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::*;

/// A thread-safe [`classify`] with a bounded cache keyed by the exact text: the same texts
/// recur constantly (prepared statements, ORMs sending `$1` placeholders, pgbench), and a
/// hit costs a hash and a lock instead of three parses.
///
/// Only successes are cached. Errors are rare in real traffic, cheap to recompute relative
/// to the round trip they abort, and caching them would let junk texts evict useful entries.
/// When full (by entries or bytes) the cache is simply cleared: an LRU would cost
/// bookkeeping on every hit to improve only the case of a working set larger than the cache.
#[derive(Debug, Default)]
pub struct Classifier {
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    map: HashMap<Box<str>, Arc<[Classified]>>,
    /// By shape (the text without its literal values, see [`crate::shape`]): one statement.
    shapes: HashMap<Box<str>, Arc<Classified>>,
    bytes: usize,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`classify`], cached.
    pub fn classify(&self, sql: &str) -> Result<Arc<[Classified]>, ClassifyError> {
        self.classify_as(sql, StringLiterals::Standard)
    }

    /// [`classify_as`], cached. One cache serves both modes: a text is only ever accepted
    /// in [`StringLiterals::BackslashEscapes`] mode when it has no backslash, and such a
    /// text reads the same in both.
    pub fn classify_as(
        &self,
        sql: &str,
        strings: StringLiterals,
    ) -> Result<Arc<[Classified]>, ClassifyError> {
        if strings == StringLiterals::BackslashEscapes && sql.contains('\\') {
            return Err(ClassifyError::AmbiguousBackslash);
        }
        let cacheable = sql.len() <= CACHE_MAX_TEXT_BYTES;
        if cacheable && let Some(shape) = crate::shape::shape(sql) {
            return self.classify_shaped(sql, shape);
        }
        if cacheable && let Some(hit) = self.lock().map.get(sql) {
            return Ok(Arc::clone(hit));
        }
        let classified: Arc<[Classified]> = classify(sql)?.into();
        if cacheable {
            let size = sql.len()
                + classified
                    .iter()
                    .map(|c| c.text.len() + c.normalized.len() + 64)
                    .sum::<usize>();
            let mut cache = self.lock();
            if cache.map.len() >= CACHE_MAX_ENTRIES || cache.bytes + size > CACHE_MAX_BYTES {
                cache.map.clear();
                cache.shapes.clear();
                cache.bytes = 0;
            }
            if cache
                .map
                .insert(sql.into(), Arc::clone(&classified))
                .is_none()
            {
                cache.bytes += size;
            }
        }
        Ok(classified)
    }

    /// A text whose shape the lexer found: classified once per shape; this text's own
    /// statement and normalised form are filled in on each use, so nothing of another text
    /// (its values) is ever returned for this one.
    fn classify_shaped(
        &self,
        sql: &str,
        shape: crate::shape::Shape,
    ) -> Result<Arc<[Classified]>, ClassifyError> {
        let own = |base: &Classified| Classified {
            statement: base.statement.clone(),
            text: shape.statement.clone(),
            normalized: shape.normalized.clone(),
            fingerprint: base.fingerprint.clone(),
            copy: base.copy,
            outputs: base.outputs.clone(),
            holds_credentials: base.holds_credentials,
        };
        if let Some(hit) = self.lock().shapes.get(shape.key.as_str()) {
            return Ok(Arc::from([own(hit)]));
        }
        let classified = classify(sql)?;
        let [one] = classified.as_slice() else {
            // The lexer only shapes single statements; should the parser disagree, the
            // full answer stands and nothing is cached.
            return Ok(classified.into());
        };
        let size = shape.key.len() + one.normalized.len() + 64;
        let mine = own(one);
        let mut cache = self.lock();
        if cache.shapes.len() >= CACHE_MAX_ENTRIES || cache.bytes + size > CACHE_MAX_BYTES {
            cache.shapes.clear();
            cache.map.clear();
            cache.bytes = 0;
        }
        cache.bytes += size;
        cache
            .shapes
            .insert(shape.key.into_boxed_str(), Arc::new(one.clone()));
        Ok(Arc::from([mine]))
    }

    /// Number of cached texts.
    pub fn cached(&self) -> usize {
        let cache = self.lock();
        cache.map.len() + cache.shapes.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The map is never left half-updated by a panic, so a poisoned lock is still sound.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_of_one_shape_share_a_classification_but_keep_their_own_text() {
        let classifier = Classifier::new();
        let one = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
        let two = "SELECT abalance FROM pgbench_accounts WHERE aid = 777";
        let a = classifier.classify(one).unwrap();
        let b = classifier.classify(two).unwrap();
        assert_eq!(classifier.cached(), 1);
        assert_eq!(a[0].statement, b[0].statement);
        assert_eq!(a[0].fingerprint, b[0].fingerprint);
        assert_eq!(b[0].text, two);
        assert_eq!(a[0].normalized, b[0].normalized);
        assert!(!b[0].normalized.contains("777"));
        // A hit gives what a full parse gives, but for the normalised form, which is the
        // shape's (every literal numbered in order).
        for sql in [
            two,
            "select c.name, o.total from customers c join orders o on o.cid = c.id where c.email = 'a@b.c' and o.total > 10.5",
            "with d as (delete from t where id = 3 returning *) select * from d",
            "update accounts set balance = balance - 5 where id = 9",
            "delete from customers",
            "insert into t (a, b) values (1, 'x'), (2, 'y') on conflict (a) do update set b = 'z'",
            "select pg_read_file('/etc/passwd')",
        ] {
            let cached = classifier.classify(sql).unwrap();
            let again = classifier.classify(&sql.replace('5', "6")).unwrap();
            let full = classify(sql).unwrap();
            assert_eq!(cached[0].statement, full[0].statement, "{sql}");
            assert_eq!(again[0].statement, full[0].statement, "{sql}");
            assert_eq!(cached[0].fingerprint, full[0].fingerprint, "{sql}");
            assert_eq!(cached[0].copy, full[0].copy, "{sql}");
            assert_eq!(cached[0].text, full[0].text, "{sql}");
        }
    }

    #[test]
    fn classifier_caches_successes() {
        let classifier = Classifier::new();
        // A comment keeps the text away from the shape cache: this is the exact-text one.
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345 -- x";
        let a = classifier.classify(sql).unwrap();
        let b = classifier.classify(sql).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&a[..], &classify(sql).unwrap()[..]);
        assert_eq!(classifier.cached(), 1);

        assert!(classifier.classify("SELEC 1").is_err());
        assert_eq!(classifier.cached(), 1, "errors are not cached");

        let long = format!("SELECT 1 /* {} */", "x".repeat(CACHE_MAX_TEXT_BYTES));
        let a = classifier.classify(&long).unwrap();
        let b = classifier.classify(&long).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(classifier.cached(), 1, "long texts are not cached");

        for i in 0..CACHE_MAX_ENTRIES + 10 {
            classifier.classify(&format!("SELECT {i} -- n")).unwrap();
        }
        assert!(classifier.cached() <= CACHE_MAX_ENTRIES);
        assert!(classifier.cached() >= 10);
        assert!(classifier.classify("").unwrap().is_empty());
    }

    #[test]
    fn classifier_is_shared_across_threads() {
        let classifier = Arc::new(Classifier::new());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let classifier = Arc::clone(&classifier);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let sql = format!("SELECT * FROM t{} WHERE id = {i}", i % 7);
                        let v = classifier.classify(&sql).unwrap();
                        assert_eq!(v[0].statement.tables, [format!("t{}", i % 7)], "thread {t}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
