//! The RFC 6962 (RFC 9162 §2.1) Merkle tree over audit events.
//!
//! Leaves are `SHA-256(0x00 || entry)`, interior nodes `SHA-256(0x01 || left || right)`; the
//! tree of `n` leaves splits at the largest power of two below `n`. This module is pure: the
//! tree's hash (MTH), inclusion and consistency proofs and their verification, and a compact
//! [`Frontier`] (one hash per set bit of the size) that appends in O(log n) and gives the root
//! without re-reading the log. Verification follows the RFC 9162 algorithms, so a proof made
//! by any conforming log checks here and the other way round.

use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// The hash of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || entry)`. The prefix keeps leaf hashes apart from interior node hashes
/// (prefix 0x01), which is what stops a second-preimage attack on the tree.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the audit path of leaf `index` (RFC 6962 §2.1.1).
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(
        index < leaves.len(),
        "leaf {index} is not in a tree of {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    proof
}

/// The audit paths of several leaves at once, in the order of `indices`: the tree's levels
/// are hashed once (about `2n` hashes) instead of once per proof, for a session's worth of
/// events in a large log. Pairing neighbours level by level, an odd last node carried up
/// unpaired, builds exactly the RFC 6962 tree, so each path is [`inclusion_proof`]'s.
pub fn inclusion_proofs(indices: &[usize], leaves: &[Hash]) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves.to_vec()];
    while levels.last().is_some_and(|level| level.len() > 1) {
        let below = levels.last().expect("a level");
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [lone] => *lone,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        levels.push(above);
    }
    indices
        .iter()
        .map(|&index| {
            assert!(
                index < leaves.len(),
                "leaf {index} is not in a tree of {}",
                leaves.len()
            );
            let mut proof = Vec::new();
            let mut at = index;
            for level in &levels[..levels.len() - 1] {
                let sibling = at ^ 1;
                if sibling < level.len() {
                    proof.push(level[sibling]);
                }
                at >>= 1;
            }
            proof
        })
        .collect()
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// PROOF(m, D[n]): the consistency proof between the trees of the first `old_size` leaves
/// and of all of them (RFC 6962 §2.1.2). Empty when `old_size` is 0 or equals the size.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(
        old_size <= leaves.len(),
        "old size {old_size} beyond {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut proof);
    }
    proof
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// PROOF(m, D[n]) computed from the tree's right edge at size m and only the leaves appended
/// since, instead of all n leaves: what a log needs to prove a new checkpoint consistent with
/// one it published long ago without re-reading everything before it.
///
/// This works because every node of the proof covers either a range inside the first m
/// leaves, which is then one of the perfect subtrees of `old` (the recursion only splits off
/// the old tree's own subtrees), or a range inside the new leaves. Gives the same proof as
/// [`consistency_proof`].
pub fn consistency_proof_from(old: &Frontier, new_leaves: &[Hash]) -> Vec<Hash> {
    let m = old.size;
    let n = m + new_leaves.len() as u64;
    let mut proof = Vec::new();
    if m == 0 || new_leaves.is_empty() {
        return proof;
    }
    // The old tree's subtrees as (start, end, root), left to right.
    let mut old_subtrees = Vec::with_capacity(old.nodes.len());
    let mut start = 0u64;
    for (bit, node) in (0..u64::BITS)
        .rev()
        .filter(|b| m >> b & 1 == 1)
        .zip(&old.nodes)
    {
        let end = start + (1u64 << bit);
        old_subtrees.push((start, end, *node));
        start = end;
    }
    let range_root = |from: u64, to: u64| -> Hash {
        if from >= m {
            root(&new_leaves[(from - m) as usize..(to - m) as usize])
        } else {
            old_subtrees
                .iter()
                .find(|(s, e, _)| *s == from && *e == to)
                .map(|(_, _, node)| *node)
                .expect("the proof only needs whole subtrees of the old tree")
        }
    };
    fn walk(
        m: u64,
        from: u64,
        to: u64,
        complete: bool,
        range_root: &dyn Fn(u64, u64) -> Hash,
        out: &mut Vec<Hash>,
    ) {
        let n = to - from;
        if m == n {
            if !complete {
                out.push(range_root(from, to));
            }
            return;
        }
        let k = split(n as usize) as u64;
        if m <= k {
            walk(m, from, from + k, complete, range_root, out);
            out.push(range_root(from + k, to));
        } else {
            walk(m - k, from + k, to, false, range_root, out);
            out.push(range_root(from, from + k));
        }
    }
    walk(m, 0, n, true, &range_root, &mut proof);
    proof
}

/// Why a proof does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old} is larger than new size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has {0} hashes, not the number the sizes require")]
    WrongLength(usize),
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if &r == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies a consistency proof between an old and a new tree (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        return if !proof.is_empty() {
            Err(ProofError::WrongLength(proof.len()))
        } else if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        // Everything is consistent with the empty tree; there is nothing to prove.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength(proof.len()))
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength(0));
    }
    // If the old size is a power of two, the old root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = path[0];
    let mut s_r = path[0];
    for c in &path[1..] {
        if s_n == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if &f_r == old_root && &s_r == new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of the tree: the roots of the perfect subtrees that make up the first
/// `size` leaves, largest first (one per set bit of `size`). Enough to append a leaf in
/// O(log n) and to compute the root, which is what the log keeps between appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Subtree roots, largest (leftmost) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stored subtree roots, largest first (to persist them).
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Rebuilds a frontier from persisted parts; `None` if they cannot belong together.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    pub fn append(&mut self, leaf: Hash) {
        let mut carry = leaf;
        // Each trailing one bit of the old size is a perfect subtree the new leaf completes.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            carry = node_hash(&left, &carry);
            size >>= 1;
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    /// The tree hash of everything appended so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(first) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*first, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("event {i}").as_bytes()))
            .collect()
    }

    /// MTH written the slow way, straight from the RFC's definition with byte vectors, as the
    /// reference the fast paths are held to.
    fn naive_root(entries: &[Vec<u8>]) -> Hash {
        match entries.len() {
            0 => Sha256::digest([]).into(),
            1 => Sha256::digest([&[0u8][..], &entries[0]].concat()).into(),
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                let l = naive_root(&entries[..k]);
                let r = naive_root(&entries[k..]);
                Sha256::digest([&[1u8][..], &l, &r].concat()).into()
            }
        }
    }

    #[test]
    fn consistency_from_frontier_matches_full_computation() {
        let all = leaves(70);
        for n in 1..=all.len() {
            for m in 0..=n {
                let mut old = Frontier::new();
                for leaf in &all[..m] {
                    old.append(*leaf);
                }
                assert_eq!(
                    consistency_proof_from(&old, &all[m..n]),
                    consistency_proof(m, &all[..n]),
                    "m={m} n={n}"
                );
            }
        }
    }

    #[test]
    fn definitions() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The leaf of the empty entry is SHA-256 of the single byte 0x00.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
    }

    #[test]
    fn roots_match_the_naive_definition_and_the_frontier() {
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        let entries: Vec<Vec<u8>> = (0..70u32)
            .map(|i| i.to_be_bytes().repeat(i as usize % 5))
            .collect();
        let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        for n in 0..=entries.len() {
            assert_eq!(root(&hashes[..n]), naive_root(&entries[..n]), "size {n}");
            assert_eq!(frontier.root(), root(&hashes[..n]), "frontier at size {n}");
            assert_eq!(frontier.nodes().len(), n.count_ones() as usize);
            let rebuilt = Frontier::from_parts(frontier.size(), frontier.nodes().to_vec()).unwrap();
            assert_eq!(rebuilt, frontier);
            if n < entries.len() {
                frontier.append(hashes[n]);
            }
        }
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_none());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=33 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let proof = inclusion_proof(i, &l);
                verify_inclusion(&l[i], i as u64, n as u64, &proof, &r).unwrap();
                // another leaf, another index, another size, a changed hash: all refused
                let other = leaf_hash(b"forged");
                assert!(verify_inclusion(&other, i as u64, n as u64, &proof, &r).is_err());
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(verify_inclusion(&l[i], j as u64, n as u64, &proof, &r).is_err());
                }
                // (The size itself is bound by the signed checkpoint that carries it with the
                // root: for some shapes a proof also fits a neighbouring size.)
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(verify_inclusion(&l[i], i as u64, n as u64, &bad, &r).is_err());
                    assert!(verify_inclusion(&l[i], i as u64, n as u64, &proof[1..], &r).is_err());
                }
            }
            assert_eq!(
                verify_inclusion(&l[0], n as u64, n as u64, &[], &r),
                Err(ProofError::IndexOutOfRange {
                    index: n as u64,
                    size: n as u64
                })
            );
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_rewrites_fail() {
        for n in 1..=33 {
            let l = leaves(n);
            let new_root = root(&l);
            for m in 0..=n {
                let old_root = root(&l[..m]);
                let proof = consistency_proof(m, &l);
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
                if m > 0 && m < n {
                    // A log that rewrote an old entry cannot prove consistency.
                    let mut rewritten = l.clone();
                    rewritten[m - 1] = leaf_hash(b"rewritten");
                    let forged_root = root(&rewritten);
                    assert!(
                        verify_consistency(m as u64, n as u64, &old_root, &forged_root, &proof)
                            .is_err()
                    );
                    let forged_proof = consistency_proof(m, &rewritten);
                    assert!(
                        verify_consistency(
                            m as u64,
                            n as u64,
                            &old_root,
                            &forged_root,
                            &forged_proof
                        )
                        .is_err()
                    );
                    // Sizes out of order are refused.
                    assert!(
                        verify_consistency(n as u64, m as u64, &new_root, &old_root, &proof)
                            .is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn proof_sizes_are_logarithmic() {
        let l = leaves(1000);
        assert!(inclusion_proof(517, &l).len() <= 10);
        assert!(consistency_proof(517, &l).len() <= 2 * 10);
    }

    #[test]
    fn proofs_from_levels_are_the_recursive_ones() {
        for n in 1..70usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let indices: Vec<usize> = (0..n).collect();
            let proofs = inclusion_proofs(&indices, &leaves);
            for (i, proof) in proofs.iter().enumerate() {
                assert_eq!(proof, &inclusion_proof(i, &leaves), "leaf {i} of {n}");
            }
        }
    }
}
