//! Helpers shared by the classifier's unit tests.

pub(super) use super::*;

pub(super) fn all(sql: &str) -> Vec<Classified> {
    classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}
pub(super) fn one(sql: &str) -> SqlStatement {
    let mut v = all(sql);
    assert_eq!(v.len(), 1, "{sql}: {v:?}");
    v.remove(0).statement
}
pub(super) fn kinds(sql: &str) -> Vec<String> {
    one(sql).kinds
}
pub(super) fn tables(sql: &str) -> Vec<String> {
    one(sql).tables
}
pub(super) fn functions(sql: &str) -> Vec<String> {
    one(sql).functions
}
pub(super) fn parse_err(sql: &str) -> (String, Option<usize>) {
    match classify(sql) {
        Err(ClassifyError::Parse { message, cursor }) => (message, cursor),
        other => panic!("{sql}: {other:?}"),
    }
}
